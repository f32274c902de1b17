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

-- One statement-level trigger with transition tables: a batch of completions or claims records its
-- changes in one INSERT, where a row trigger ran a PL/pgSQL call per row (half the cost of a
-- batched completion). It fires for every UPDATE of executions (transition tables cannot go with a
-- column list), so the join keeps only rows whose status changed; heartbeats record nothing.
drop trigger if exists executions_record_status_change on usher.executions;
drop function if exists usher.record_status_change();

create or replace function usher.record_status_changes()
returns trigger
language plpgsql
as $$
begin
  insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
  select n.id, n.action_ref, n.status, o.status, n.attempt,
    extract(epoch from case
      when o.status = 'requested' and n.status = 'scheduled'
        then n.scheduled_at - coalesce(greatest(n.queued_at, n.run_at), n.created_at)
      when o.status = 'scheduled' and n.status = 'running'
        then n.started_at - n.scheduled_at
      when o.status in ('running', 'canceling') and n.status <> 'canceling'
        then coalesce(n.completed_at, clock_timestamp()) - o.started_at
    end)
  from changed_new n
  join changed_old o on o.id = n.id
  where o.status is distinct from n.status
  order by n.id;
  return null;
end
$$;

comment on function usher.record_status_changes() is
  'AFTER UPDATE (per statement) on usher.executions: records each status change for the event stream, with the time spent in the previous status where it is known.';

create or replace trigger executions_record_status_changes
  after update on usher.executions
  referencing old table as changed_old new table as changed_new
  for each statement
  execute function usher.record_status_changes();

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
  -- Transitions no stream sequenced in time (no API was running) go as well.
  delete from usher.execution_transitions t
  where t.id in (select id from usher.execution_transitions where at < v_cutoff order by id limit p_batch);
  get diagnostics v_transitions = row_count;
  return v_events + v_transitions;
end
$$;

comment on function usher.delete_old_execution_events(integer, integer) is
  'Deletes up to p_batch events and p_batch unsequenced transitions older than p_keep_seconds; returns how many. Run by the executor''s sweep.';
