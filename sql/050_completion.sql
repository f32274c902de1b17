-- Ending an attempt. The slot is released, and the next execution of the lane admitted, in the
-- same transaction that writes the outcome: there is no message to lose in between.

create or replace function usher.retry_backoff_seconds(p_action usher.actions, p_attempt integer)
returns numeric
language sql
volatile
as $$
  select least(coalesce(p_action.retry_max_delay_seconds, 300),
      coalesce(p_action.retry_delay_seconds, 1) * power(coalesce(p_action.retry_backoff_factor, 2), greatest(p_attempt - 1, 0)))
    * (1 + coalesce(p_action.retry_jitter, 0.2) * (2 * random() - 1))
$$;

comment on function usher.retry_backoff_seconds(usher.actions, integer) is
  'Backoff before the retry that follows attempt p_attempt: exponential from the action''s retry_delay_seconds, capped, with jitter.';

create or replace function usher.conclude_attempt(
  p_id bigint,
  p_lease_token uuid,
  p_outcome text,
  p_result jsonb,
  p_error text,
  p_retryable boolean,
  p_notify boolean default true
)
returns text
language plpgsql
as $$
declare
  v_execution usher.executions;
  v_action usher.actions;
  v_policy usher.policies;
  v_now timestamptz := clock_timestamp();
  v_status text;
  v_retry_at timestamptz;
begin
  -- By id alone, then checked: a status condition here would let a generic plan walk the partial
  -- index of every running execution instead of the primary key.
  select * into v_execution
  from usher.executions e
  where e.id = p_id
  for update;
  if v_execution.lease_token is distinct from p_lease_token or v_execution.status not in ('running', 'canceling') then
    -- Fenced: this lease was voided (expired and swept, or handed to another attempt).
    return null;
  end if;

  if v_execution.status = 'canceling' and p_outcome <> 'completed' then
    v_status := 'cancelled';
  elsif p_outcome in ('failed', 'timeout', 'abandoned') and p_retryable
      and v_execution.attempt <= coalesce(v_execution.max_retries, 0) then
    -- Retry: the same row goes back to its place in its lane, after a backoff; the attempt that
    -- ended is kept in execution_attempts.
    select * into v_action from usher.actions a where a.ref = v_execution.action_ref;
    v_retry_at := v_now + make_interval(secs => usher.retry_backoff_seconds(v_action, v_execution.attempt)::float8);
    insert into usher.execution_attempts (execution_id, attempt, worker_id, status, error, result, started_at, ended_at, retry_at)
    values (p_id, v_execution.attempt, v_execution.worker_id, p_outcome, p_error, p_result, v_execution.started_at, v_now, v_retry_at);
    update usher.executions e
    set status = case when e.lane_key is null then 'delayed' else 'requested' end,
      run_at = v_retry_at,
      result = p_result,
      error = p_error,
      lease_token = null,
      lease_expires_at = null,
      scheduled_at = null,
      started_at = null,
      scope_counted = false,
      updated_at = v_now
    where e.id = p_id
    returning e.status into v_status;
    if v_execution.lane_key is not null then
      perform usher.release_slot(v_execution.lane_key, v_execution.scope_counted);
    end if;
    -- The executor recomputes when to wake: at the end of this backoff at the latest.
    perform pg_notify('usher.execution_requested', '');
    return v_status;
  else
    v_status := p_outcome;
  end if;

  update usher.executions e
  set status = v_status,
    result = case when v_status = 'cancelled' then e.result else p_result end,
    error = p_error,
    completed_at = v_now,
    updated_at = v_now,
    lease_token = null,
    lease_expires_at = null
  where e.id = p_id;

  if v_execution.lane_key is not null then
    if v_status in ('failed', 'timeout', 'abandoned') then
      v_policy := usher.lane_policy(v_execution.lane_key);
      if v_policy.on_failure = 'block' then
        update usher.lanes
        set blocked_by = p_id,
          blocked_reason = format('execution %s ended %s after %s attempts: %s', p_id, v_status, v_execution.attempt, coalesce(p_error, 'no error message')),
          blocked_at = v_now
        where lane_key = v_execution.lane_key;
      end if;
    end if;
    perform usher.release_slot(v_execution.lane_key, v_execution.scope_counted);
  end if;
  if p_notify then
    perform usher.notify_completed(array[p_id]);
  end if;
  return v_status;
end
$$;

comment on function usher.conclude_attempt(bigint, uuid, text, jsonb, text, boolean, boolean) is
  'Ends the attempt held under p_lease_token: retries it (back to its place in its lane after a backoff) when it failed, timed out or was abandoned with retries left, otherwise writes the terminal status; releases the slot and admits the next. The caller must hold the lane lock. Null when the lease is no longer held.';

create or replace function usher.end_execution(
  p_id bigint,
  p_lease_token uuid,
  p_outcome text,
  p_result jsonb,
  p_error text,
  p_retryable boolean default true
)
returns text
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
as $$
declare
  v_lane_key text;
begin
  if p_outcome not in ('completed', 'failed', 'timeout', 'cancelled') then
    raise exception 'usher.end_execution: % is not an outcome a worker can report', quote_nullable(p_outcome)
      using errcode = 'invalid_parameter_value';
  end if;
  -- lane_key never changes once an execution holds a slot, so it can be read before taking the lane lock.
  select e.lane_key into v_lane_key from usher.executions e where e.id = p_id;
  if v_lane_key is not null then
    perform usher.lock_lane(v_lane_key);
  end if;
  return usher.conclude_attempt(p_id, p_lease_token, p_outcome, p_result, p_error, p_retryable);
end
$$;

comment on function usher.end_execution(bigint, uuid, text, jsonb, text, boolean) is
  'Writes a worker''s outcome for the lease holder only, in one transaction with the slot release and the next admission. Returns the status written (requested or delayed: retrying), or null when the lease is no longer held.';

create or replace function usher.complete_execution(p_id bigint, p_lease_token uuid, p_result jsonb)
returns text
language sql
as $$
  select usher.end_execution(p_id, p_lease_token, 'completed', p_result, null)
$$;

comment on function usher.complete_execution(bigint, uuid, jsonb) is
  'Handler returned: completed with its result. Null when the lease is no longer held.';

create or replace function usher.fail_execution(
  p_id bigint,
  p_lease_token uuid,
  p_error text,
  p_result jsonb default null,
  p_retryable boolean default true
)
returns text
language sql
as $$
  select usher.end_execution(p_id, p_lease_token, 'failed', p_result, p_error, p_retryable)
$$;

comment on function usher.fail_execution(bigint, uuid, text, jsonb, boolean) is
  'Handler threw: retried if it may be and retries are left, else failed (cancelled if a cancel was pending). Null when the lease is no longer held.';

create or replace function usher.time_out_execution(p_id bigint, p_lease_token uuid, p_error text)
returns text
language sql
as $$
  select usher.end_execution(p_id, p_lease_token, 'timeout', null, p_error)
$$;

comment on function usher.time_out_execution(bigint, uuid, text) is
  'Handler overran its timeout_seconds: retried if retries are left, else timeout. Null when the lease is no longer held.';

create or replace function usher.lock_held_execution(p_id bigint, p_lease_token uuid)
returns usher.executions
language plpgsql
as $$
declare
  v_lane_key text;
  v_execution usher.executions;
begin
  -- Lane, then row, as everywhere (lane_key never changes while an execution holds a slot, so it can
  -- be read before the lock). The status is read under the row lock: read before it, a cancel
  -- committing in between left a caller's guarded update nothing to change.
  select e.lane_key into v_lane_key from usher.executions e where e.id = p_id;
  if v_lane_key is not null then
    perform usher.lock_lane(v_lane_key);
  end if;
  select * into v_execution from usher.executions e
  where e.id = p_id
  for update;
  if v_execution.lease_token is distinct from p_lease_token or v_execution.status not in ('running', 'canceling') then
    return null;
  end if;
  return v_execution;
end
$$;

comment on function usher.lock_held_execution(bigint, uuid) is
  'Locks an execution''s lane and row and returns the row while p_lease_token still holds it (running or canceling); null otherwise. For the marks that change more than the outcome (hand-back, postpone).';

create or replace function usher.hand_back_execution(p_id bigint, p_lease_token uuid)
returns text
language plpgsql
as $$
declare
  v_execution usher.executions;
begin
  v_execution := usher.lock_held_execution(p_id, p_lease_token);
  if v_execution.id is null then
    return null;
  end if;
  -- A pending cancel wins over a hand-back: without the locks above, a cancel committing meanwhile
  -- made this answer "lease lost" and left the execution canceling, its slot held until the lease expired.
  if v_execution.status = 'canceling' then
    return usher.conclude_attempt(p_id, p_lease_token, 'cancelled', null, 'worker shut down while canceling', false);
  end if;

  update usher.executions e
  set status = 'scheduled',
    attempt = e.attempt - 1,
    worker_id = null,
    lease_token = null,
    lease_expires_at = null,
    started_at = null,
    updated_at = clock_timestamp()
  where e.id = p_id;
  perform pg_notify('usher.execution_scheduled', '');
  return 'scheduled';
end
$$;

comment on function usher.hand_back_execution(bigint, uuid) is
  'Graceful shutdown: a claimed execution the worker did not finish goes back to scheduled, keeping its slot (so it stays at the head of its lane) and with no attempt charged.';

create or replace function usher.postpone_execution(p_id bigint, p_lease_token uuid, p_until timestamptz, p_reason text)
returns text
language plpgsql
as $$
declare
  v_lane_key text;
  v_execution usher.executions;
  v_now timestamptz := clock_timestamp();
begin
  v_execution := usher.lock_held_execution(p_id, p_lease_token);
  if v_execution.id is null then
    return null;
  end if;
  v_lane_key := v_execution.lane_key;
  if v_execution.status = 'canceling' then
    return usher.conclude_attempt(p_id, p_lease_token, 'cancelled', null, 'cancelled while postponing', false);
  end if;

  -- Back to its place, no attempt charged; the whole lane waits (an execution without lane waits alone).
  -- It can be admitted again from p_until: its waiting time counts from then.
  update usher.executions e
  set status = case when e.lane_key is null then 'delayed' else 'requested' end,
    run_at = case when e.lane_key is null then p_until end,
    queued_at = greatest(p_until, v_now),
    attempt = e.attempt - 1,
    worker_id = null,
    lease_token = null,
    lease_expires_at = null,
    scheduled_at = null,
    started_at = null,
    scope_counted = false,
    updated_at = v_now
  where e.id = p_id;
  if v_lane_key is not null then
    update usher.lanes l
    set paused_until = greatest(l.paused_until, p_until),
      pause_reason = coalesce(p_reason, format('postponed by execution %s', p_id))
    where l.lane_key = v_lane_key;
    perform usher.release_slot(v_lane_key, v_execution.scope_counted);
  end if;
  perform pg_notify('usher.execution_requested', '');
  return case when v_lane_key is null then 'delayed' else 'requested' end;
end
$$;

comment on function usher.postpone_execution(bigint, uuid, timestamptz, text) is
  'A handler hit an upstream limit: its execution goes back to the head of its lane with no attempt charged, and the whole lane pauses until p_until.';

drop function if exists usher.complete_and_claim(bigint, uuid, jsonb, bigint, text[], integer, integer);

create or replace function usher.complete_and_claim(
  p_ids bigint[],
  p_lease_tokens uuid[],
  p_results jsonb[],
  p_worker_id bigint,
  p_action_refs text[],
  p_limit integer,
  p_lease_seconds integer
)
returns table (
  kind text,
  id bigint,
  status text,
  action_ref text,
  params jsonb,
  attempt integer,
  lease_token uuid,
  timeout_seconds integer
)
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
-- Every status change in this function is recorded by its own statements: the row trigger stands aside.
set usher.records_own_transitions = on
as $$
#variable_conflict use_column
declare
  v_now timestamptz := clock_timestamp();
  v_completed bigint[] := '{}';
  v_lane_keys text[] := '{}';
  v_scope_counted boolean[] := '{}';
  v_from text;
  v_release_keys text[];
  v_release_counts integer[];
  v_release_scoped integer[];
  v_admitted bigint[] := '{}';
  -- Compared inside IS TRUE, so no plan reads an index of every row in that status (as in admit_lane_head).
  v_scheduled constant text := 'scheduled';
begin
  if cardinality(p_ids) is distinct from cardinality(p_lease_tokens)
      or cardinality(p_ids) is distinct from cardinality(p_results) then
    raise exception 'usher.complete_and_claim: % ids, % lease tokens and % results; each id needs its token and result',
      cardinality(p_ids), cardinality(p_lease_tokens), cardinality(p_results)
      using errcode = 'invalid_parameter_value';
  end if;
  -- Lock order as everywhere: lanes, then execution rows. Lanes in key order, so batches of
  -- workers completing in the same lanes cannot deadlock. lane_key never changes while an
  -- execution holds a slot, so it can be read before the lock.
  perform 1 from usher.lanes l
  where l.lane_key = any (array(
    select e.lane_key from usher.executions e join unnest(p_ids) as i (id) on e.id = i.id where e.lane_key is not null))
  order by l.lane_key
  for update;

  -- A token that no longer matches (the lease was voided) leaves its row alone. Running rows
  -- first, then any left with a pending cancel (completing wins over it, as in conclude_attempt):
  -- each pass knows the status it changes from without reading the row before, so the event
  -- stream's records are written here for the whole batch (the row trigger stands aside inside
  -- this function). Status compared inside IS TRUE: as an index condition, a generic plan could
  -- walk every running execution instead of the primary key.
  foreach v_from in array array['running', 'canceling'] loop
    exit when cardinality(v_completed) = cardinality(p_ids);
    with done as (
      update usher.executions e
      set status = 'completed',
        result = i.result,
        error = null,
        completed_at = v_now,
        updated_at = v_now,
        lease_token = null,
        lease_expires_at = null
      from unnest(p_ids, p_lease_tokens, p_results) as i (id, lease_token, result)
      where e.id = i.id
        and e.lease_token = i.lease_token
        and (e.status = v_from) is true
      returning e.id, e.lane_key, e.scope_counted, e.action_ref, e.attempt, e.started_at
    ),
    recorded as (
      insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
      select d.id, d.action_ref, 'completed', v_from, d.attempt, extract(epoch from v_now - d.started_at)
      from done d
      order by d.id
    )
    select v_completed || coalesce(array_agg(d.id order by d.id), '{}'), v_lane_keys || array_agg(d.lane_key),
      v_scope_counted || array_agg(d.scope_counted)
    into v_completed, v_lane_keys, v_scope_counted
    from done d;
  end loop;

  -- Each lane gives back its slots and admits its next executions once, for the whole batch.
  select array_agg(u.lane_key), array_agg(u.released), array_agg(u.scoped)
  into v_release_keys, v_release_counts, v_release_scoped
  from (
    select u.lane_key, count(*)::integer as released, (count(*) filter (where u.scope_counted))::integer as scoped
    from unnest(v_lane_keys, v_scope_counted) as u (lane_key, scope_counted)
    where u.lane_key is not null
    group by u.lane_key
  ) u;
  if v_release_keys is not null then
    v_admitted := usher.release_lane_slots(v_release_keys, v_release_counts, v_release_scoped);
  end if;
  perform usher.notify_completed(v_completed);

  if p_limit > 0 then
    return query
    select 'claimed', c.id, 'running', c.action_ref, c.params, c.attempt, c.lease_token, c.timeout_seconds
    from usher.claim_scheduled(p_worker_id, p_action_refs, p_limit, p_lease_seconds) c;
  end if;
  -- Workers are woken only for admitted executions this claim left behind (another action's, or
  -- more than the freed slots): waking them for what was just claimed would only cost empty claims.
  if exists (select 1 from usher.executions e join unnest(v_admitted) as a (id) on e.id = a.id where (e.status = v_scheduled) is true) then
    perform pg_notify('usher.execution_scheduled', '');
  end if;

  return query
  select 'marked', i.id, case when c.id is not null then 'completed' end,
    null::text, null::jsonb, null::integer, null::uuid, null::integer
  from unnest(p_ids) as i (id)
  left join unnest(v_completed) as c (id) on c.id = i.id;
end
$$;

comment on function usher.complete_and_claim(bigint[], uuid[], jsonb[], bigint, text[], integer, integer) is
  'Completes a batch of executions, each presenting its lease token; each lane gives back its slots and admits its next once for the batch; then claims up to p_limit for the worker slots freed (often those very next executions), all in one transaction. Rows of kind ''marked'' give each id''s status (null: its lease is no longer held); rows of kind ''claimed'' are the new claims.';
