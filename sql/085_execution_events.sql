-- Recording status changes for the event stream (tables in migrations/0004). Triggers write each
-- change into usher.execution_transitions inside the transaction that makes it, so a change and its
-- record commit or roll back together; usher.sequence_execution_events() gives them positions.

create or replace function usher.record_inserted_executions()
returns trigger
language plpgsql
as $$
begin
  insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds, at)
  select i.id, i.action_ref, i.status, null, i.attempt, case when i.status = 'scheduled' then 0 end, i.created_at
  from inserted i
  order by i.id;
  return null;
end
$$;

comment on function usher.record_inserted_executions() is
  'AFTER INSERT (per statement) on usher.executions: records each new execution''s first status for the event stream.';

create or replace trigger executions_record_inserted
  after insert on usher.executions
  referencing new table as inserted
  for each statement execute function usher.record_inserted_executions();

-- The hot path records its own changes, each in the statement that makes it, for a whole batch at
-- once: admissions (requested to scheduled, made only by usher.admit_lane_head), claims (scheduled
-- to running, only by usher.claim_scheduled) and everything usher.complete_and_claim does, which
-- runs with usher.records_own_transitions on. Every other status change is recorded by this row
-- trigger; they are rarer and mostly one row at a time. A statement-level trigger with transition
-- tables cost about a third of a serial lane's time (capturing and firing for every one-row
-- statement, whatever its body did), and a row trigger one PL/pgSQL call per row of a batch.
drop trigger if exists executions_record_status_changes on usher.executions;
drop function if exists usher.record_status_changes();

create or replace function usher.record_status_change()
returns trigger
language plpgsql
as $$
begin
  insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
  values (new.id, new.action_ref, new.status, old.status, new.attempt,
    extract(epoch from case
      when old.status in ('running', 'canceling') and new.status <> 'canceling'
        then coalesce(new.completed_at, clock_timestamp()) - old.started_at
    end));
  return null;
end
$$;

comment on function usher.record_status_change() is
  'AFTER UPDATE (per row) on usher.executions: records a status change for the event stream, with the run time when a run ends. Admissions, claims and batched completions are recorded by usher.admit_lane_head, usher.claim_scheduled and usher.complete_and_claim themselves.';

create or replace trigger executions_record_status_change
  after update of status on usher.executions
  for each row
  when (old.status is distinct from new.status
    and not (old.status = 'requested' and new.status = 'scheduled')
    and not (old.status = 'scheduled' and new.status = 'running')
    and current_setting('usher.records_own_transitions', true) is distinct from 'on')
  execute function usher.record_status_change();

create or replace function usher.sequence_execution_events(p_batch integer default 5000)
returns bigint
language plpgsql
as $$
declare
  v_last bigint;
  v_moved integer;
begin
  -- One sequencer at a time; a caller that finds it busy is told by the NOTIFY of the one running.
  select s.last_position into v_last from usher.execution_event_sequencer s for update skip locked;
  if not found then
    return null;
  end if;
  -- Taking the committed transitions in id order keeps each execution's events in order: a change
  -- is made only after the transaction of the one before it committed, so it has a larger id and
  -- is never visible without it.
  with moved as (
    delete from usher.execution_transitions t
    where t.id in (select id from usher.execution_transitions order by id limit p_batch)
    returning t.*
  )
  insert into usher.execution_events (position, execution_id, action_ref, status, previous_status, attempt, elapsed_seconds, at)
  select v_last + row_number() over (order by m.id), m.execution_id, m.action_ref, m.status, m.previous_status,
    m.attempt, m.elapsed_seconds, m.at
  from moved m;
  get diagnostics v_moved = row_count;
  if v_moved > 0 then
    v_last := v_last + v_moved;
    update usher.execution_event_sequencer set last_position = v_last;
    perform pg_notify('usher.execution_events', v_last::text);
  end if;
  return v_last;
end
$$;

comment on function usher.sequence_execution_events(integer) is
  'Moves up to p_batch committed transitions from the inbox into usher.execution_events under the next positions, and NOTIFYs usher.execution_events with the last one. Returns the last position, or null when another call is sequencing.';

create or replace function usher.delete_old_execution_events(p_keep_seconds integer, p_batch integer default 10000)
returns integer
language plpgsql
as $$
declare
  v_cutoff timestamptz := clock_timestamp() - make_interval(secs => p_keep_seconds);
  v_events integer;
  v_transitions integer;
begin
  delete from usher.execution_events e
  where e.position in (select position from usher.execution_events where at < v_cutoff order by position limit p_batch);
  get diagnostics v_events = row_count;
  -- Transitions no stream sequenced in time (no API was running) go as well. Ids are given in the
  -- order of `at` (give or take one statement's run), so the old ones lead the primary key.
  delete from usher.execution_transitions t
  where t.id in (
    select o.id
    from (select id, at from usher.execution_transitions order by id limit p_batch) o
    where o.at < v_cutoff);
  get diagnostics v_transitions = row_count;
  return v_events + v_transitions;
end
$$;

comment on function usher.delete_old_execution_events(integer, integer) is
  'Deletes up to p_batch events and p_batch unsequenced transitions older than p_keep_seconds; returns how many. Run by the executor''s sweep.';
