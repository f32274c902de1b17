-- Ending an execution. The slot is released, and the next execution of the lane admitted, in the
-- same transaction that writes the terminal state: there is no message to lose in between.

create or replace function usher.end_execution(
  p_id bigint,
  p_lease_token uuid,
  p_status text,
  p_result jsonb,
  p_error text
)
returns text
language plpgsql
as $$
declare
  v_lane_key text;
  v_status text;
  v_now timestamptz;
begin
  if p_status not in ('completed', 'failed', 'timeout', 'cancelled') then
    raise exception 'usher.end_execution: % is not an outcome a worker can report', quote_nullable(p_status)
      using errcode = 'invalid_parameter_value';
  end if;
  -- lane_key never changes after insert, so it can be read before taking the lane lock.
  select e.lane_key into v_lane_key from usher.executions e where e.id = p_id;
  if v_lane_key is not null then
    perform usher.lock_lane(v_lane_key);
  end if;

  v_now := clock_timestamp();
  update usher.executions e
  set status = case when e.status = 'canceling' and p_status <> 'completed' then 'cancelled' else p_status end,
    result = case when e.status = 'canceling' and p_status <> 'completed' then e.result else p_result end,
    error = p_error,
    completed_at = v_now,
    updated_at = v_now,
    lease_token = null,
    lease_expires_at = null
  where e.id = p_id
    and e.lease_token = p_lease_token
    and e.status in ('running', 'canceling')
  returning e.status into v_status;
  if not found then
    -- Fenced: this lease was voided (expired and swept, or handed to another attempt).
    return null;
  end if;

  if v_lane_key is not null then
    perform usher.release_slot(v_lane_key);
  end if;
  perform pg_notify('usher.execution_completed', p_id::text);
  return v_status;
end
$$;

comment on function usher.end_execution(bigint, uuid, text, jsonb, text) is
  'Writes a worker''s outcome for the lease holder only, releases the slot and admits the next of the lane, in one transaction. Returns the terminal status written, or null when the lease is no longer held.';

create or replace function usher.complete_execution(p_id bigint, p_lease_token uuid, p_result jsonb)
returns text
language sql
as $$
  select usher.end_execution(p_id, p_lease_token, 'completed', p_result, null)
$$;

comment on function usher.complete_execution(bigint, uuid, jsonb) is
  'Handler returned: completed with its result. Null when the lease is no longer held.';

create or replace function usher.fail_execution(p_id bigint, p_lease_token uuid, p_error text, p_result jsonb default null)
returns text
language sql
as $$
  select usher.end_execution(p_id, p_lease_token, 'failed', p_result, p_error)
$$;

comment on function usher.fail_execution(bigint, uuid, text, jsonb) is
  'Handler threw: failed with its message (cancelled if a cancel was pending). Null when the lease is no longer held.';

create or replace function usher.time_out_execution(p_id bigint, p_lease_token uuid, p_error text)
returns text
language sql
as $$
  select usher.end_execution(p_id, p_lease_token, 'timeout', null, p_error)
$$;

comment on function usher.time_out_execution(bigint, uuid, text) is
  'Handler overran its timeout_seconds. Null when the lease is no longer held.';

create or replace function usher.hand_back_execution(p_id bigint, p_lease_token uuid)
returns text
language plpgsql
as $$
declare
  v_status text;
begin
  -- A pending cancel wins over a hand-back.
  select e.status into v_status from usher.executions e where e.id = p_id and e.lease_token = p_lease_token;
  if v_status = 'canceling' then
    return usher.end_execution(p_id, p_lease_token, 'cancelled', null, 'worker shut down while canceling');
  end if;

  update usher.executions e
  set status = 'scheduled',
    attempt = e.attempt - 1,
    worker_id = null,
    lease_token = null,
    lease_expires_at = null,
    started_at = null,
    updated_at = clock_timestamp()
  where e.id = p_id
    and e.lease_token = p_lease_token
    and e.status = 'running'
  returning e.status into v_status;
  if not found then
    return null;
  end if;
  perform pg_notify('usher.execution_scheduled', '');
  return v_status;
end
$$;

comment on function usher.hand_back_execution(bigint, uuid) is
  'Graceful shutdown: a claimed execution the worker did not finish goes back to scheduled, keeping its slot (so it stays at the head of its lane) and with no attempt charged.';
