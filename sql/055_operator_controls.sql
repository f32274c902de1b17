-- What an operator does from psql (and the API): pause and resume, unblock a lane, retry an execution.
-- Each wakes the executor, which re-runs admission with the new state.

create or replace function usher.pause_action(p_action_ref text, p_reason text default null)
returns boolean
language plpgsql
as $$
begin
  update usher.actions
  set paused_at = coalesce(paused_at, now()), pause_reason = p_reason
  where ref = p_action_ref;
  if not found then
    raise exception 'usher.pause_action: unknown action %', quote_nullable(p_action_ref) using errcode = 'no_data_found';
  end if;
  return true;
end
$$;

comment on function usher.pause_action(text, text) is
  'Stops admission of an action''s executions: waiting ones stay in order, running ones finish.';

-- Executions that could not be admitted while paused start their waiting time (the clock of a
-- policy's queue_timeout_seconds) again at the resume. Lock order as everywhere: lanes in key order,
-- then their executions; rewriting waiting rows without the lanes could deadlock with an
-- admission that holds a lane and updates its heads in queue order.
create or replace function usher.restart_waiting_time(p_action_refs text[])
returns void
language plpgsql
as $$
begin
  perform usher.lock_lane(k.lane_key)
  from (
    select distinct e.lane_key
    from usher.executions e
    where e.action_ref = any (p_action_refs) and e.status = 'requested'
    order by e.lane_key
  ) k;
  update usher.executions e
  set queued_at = now()
  where e.action_ref = any (p_action_refs) and e.status = 'requested';
end
$$;

comment on function usher.restart_waiting_time(text[]) is
  'Sets queued_at to now for the waiting executions of these actions (after a pause), locking their lanes first.';

create or replace function usher.resume_action(p_action_ref text)
returns boolean
language plpgsql
as $$
declare
  v_paused boolean;
begin
  select a.paused_at is not null into v_paused from usher.actions a where a.ref = p_action_ref for update;
  if not found then
    raise exception 'usher.resume_action: unknown action %', quote_nullable(p_action_ref) using errcode = 'no_data_found';
  end if;
  -- Resuming an action that is not paused changes nothing: its waiting executions keep their time.
  if not v_paused then
    return true;
  end if;
  update usher.actions set paused_at = null, pause_reason = null where ref = p_action_ref;
  perform usher.restart_waiting_time(array[p_action_ref]);
  perform pg_notify('usher.execution_requested', '');
  return true;
end
$$;

comment on function usher.resume_action(text) is 'Resumes admission of a paused action, in FIFO order (no change if it was not paused).';

create or replace function usher.pause_pack(p_pack_ref text, p_reason text default null)
returns boolean
language sql
as $$
  insert into usher.pack_pauses (pack_ref, reason) values (p_pack_ref, p_reason)
  on conflict (pack_ref) do update set reason = excluded.reason
  returning true
$$;

comment on function usher.pause_pack(text, text) is 'Stops admission of every action of a pack.';

create or replace function usher.resume_pack(p_pack_ref text)
returns boolean
language plpgsql
as $$
begin
  delete from usher.pack_pauses where pack_ref = p_pack_ref;
  if not found then
    return false;
  end if;
  perform usher.restart_waiting_time(array(select a.ref from usher.actions a where split_part(a.ref, '.', 1) = p_pack_ref));
  perform pg_notify('usher.execution_requested', '');
  return true;
end
$$;

comment on function usher.resume_pack(text) is 'Resumes admission of a paused pack. False when it was not paused.';

create or replace function usher.pause_lane(p_lane_key text, p_until timestamptz, p_reason text default null)
returns boolean
language plpgsql
as $$
begin
  perform usher.lock_lane(p_lane_key);
  update usher.lanes set paused_until = p_until, pause_reason = p_reason where lane_key = p_lane_key;
  perform pg_notify('usher.execution_requested', '');
  return true;
end
$$;

comment on function usher.pause_lane(text, timestamptz, text) is
  'Stops admission into one lane until p_until (waiting executions keep their order).';

create or replace function usher.resume_lane(p_lane_key text)
returns boolean
language plpgsql
as $$
begin
  update usher.lanes set paused_until = null, pause_reason = null where lane_key = p_lane_key;
  perform pg_notify('usher.execution_requested', '');
  return found;
end
$$;

comment on function usher.resume_lane(text) is 'Lifts a lane pause at once.';

create or replace function usher.unblock_lane(p_lane_key text)
returns bigint
language plpgsql
as $$
declare
  v_blocked_by bigint;
begin
  perform usher.lock_lane(p_lane_key);
  select l.blocked_by into v_blocked_by from usher.lanes l where l.lane_key = p_lane_key;
  update usher.lanes set blocked_by = null, blocked_reason = null, blocked_at = null where lane_key = p_lane_key;
  perform pg_notify('usher.execution_requested', '');
  return v_blocked_by;
end
$$;

comment on function usher.unblock_lane(text) is
  'Skips the failed execution that blocks a lane: the lane moves on without it. Returns that execution''s id (null if the lane was not blocked).';

create or replace function usher.retry_execution(p_id bigint)
returns table (id bigint, status text)
language plpgsql
as $$
declare
  v_execution usher.executions;
  v_now timestamptz := clock_timestamp();
  v_paused boolean;
begin
  select * into v_execution from usher.executions e where e.id = p_id;
  if not found then
    return;
  end if;
  if v_execution.lane_key is not null then
    perform usher.lock_lane(v_execution.lane_key);
  end if;
  select * into v_execution from usher.executions e
  where e.id = p_id and e.status in ('failed', 'timeout', 'abandoned', 'cancelled')
  for update;
  if not found then
    raise exception 'usher.retry_execution: execution % is %, only a failed, timed out, abandoned or cancelled one can be retried',
      p_id, (select e.status from usher.executions e where e.id = p_id)
      using errcode = 'object_not_in_prerequisite_state';
  end if;

  insert into usher.execution_attempts (execution_id, attempt, worker_id, status, error, result, started_at, ended_at)
  values (p_id, v_execution.attempt, v_execution.worker_id, v_execution.status, v_execution.error, v_execution.result,
    v_execution.started_at, v_execution.completed_at);
  v_paused := usher.action_is_paused(v_execution.action_ref);
  -- Back at its old place in its lane, so the lane's order is as if it had never failed.
  update usher.executions e
  set status = case when e.lane_key is null and not v_paused then 'scheduled' else 'requested' end,
    lane_key = case when e.lane_key is null and v_paused then 'action:' || e.action_ref else e.lane_key end,
    scheduled_at = case when e.lane_key is null and not v_paused then v_now end,
    queue_position = coalesce(e.queue_position, nextval(pg_get_serial_sequence('usher.executions', 'id'))),
    -- It waits again from now (queue_timeout_seconds, the invariant check); its place is its position.
    queued_at = v_now,
    run_at = null,
    result = null,
    error = null,
    started_at = null,
    completed_at = null,
    updated_at = v_now
  where e.id = p_id
  returning e.status into v_execution.status;
  if v_execution.lane_key is not null then
    update usher.lanes l set blocked_by = null, blocked_reason = null, blocked_at = null
    where l.lane_key = v_execution.lane_key and l.blocked_by = p_id;
  end if;
  perform pg_notify('usher.execution_requested', '');
  perform pg_notify('usher.execution_scheduled', '');
  return query select p_id, v_execution.status;
end
$$;

comment on function usher.retry_execution(bigint) is
  'Operator retry of an ended execution (failed, timeout, abandoned or cancelled): it goes back to its old place in its lane as a new attempt (the ended one is kept in execution_attempts), and unblocks the lane if it was blocking it. No row for an unknown id.';
