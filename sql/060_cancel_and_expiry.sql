-- Cancelling executions, and ending those whose worker stopped answering.

create or replace function usher.cancel_execution(p_id bigint, p_reason text default null)
returns table (id bigint, status text, changed boolean)
language plpgsql
as $$
declare
  v_lane_key text;
  v_status text;
  v_scope_counted boolean;
  v_now timestamptz := clock_timestamp();
  v_result jsonb := jsonb_build_object('reason', coalesce(p_reason, 'cancelled by request'));
begin
  select e.lane_key into v_lane_key from usher.executions e where e.id = p_id;
  if not found then
    return;
  end if;

  -- Lock order as everywhere: the lane, then the row, even for a waiting execution that holds no
  -- slot. An update that finds its row changed by another transaction keeps that row locked even
  -- when the row no longer matches: a cancel that took the row first (it was just admitted) and the
  -- lane second deadlocked with a second cancel of the same execution holding the lane.
  if v_lane_key is not null then
    perform usher.lock_lane(v_lane_key);
  end if;

  -- Waiting or delayed: holds no slot.
  update usher.executions e
  set status = 'cancelled', result = v_result, completed_at = v_now, updated_at = v_now
  where e.id = p_id and e.status in ('requested', 'delayed')
  returning e.status into v_status;
  if found then
    perform usher.notify_completed(array[p_id]);
    return query select p_id, v_status, true;
    return;
  end if;

  -- Admitted but not claimed: ends now and gives its slot to the next in line.
  update usher.executions e
  set status = 'cancelled', result = v_result, completed_at = v_now, updated_at = v_now
  where e.id = p_id and e.status = 'scheduled'
  returning e.status, e.scope_counted into v_status, v_scope_counted;
  if found then
    if v_lane_key is not null then
      perform usher.release_slot(v_lane_key, v_scope_counted);
    end if;
    perform usher.notify_completed(array[p_id]);
    return query select p_id, v_status, true;
    return;
  end if;

  -- Running: the worker aborts the handler and reports; the slot is held until then (or until the lease expires).
  update usher.executions e
  set status = 'canceling', result = v_result, updated_at = v_now
  where e.id = p_id and e.status = 'running'
  returning e.status into v_status;
  if found then
    perform pg_notify('usher.execution_canceling', p_id::text);
    return query select p_id, v_status, true;
    return;
  end if;

  return query select e.id, e.status, false from usher.executions e where e.id = p_id;
end
$$;

comment on function usher.cancel_execution(bigint, text) is
  'Cancels an execution: waiting or admitted ones end cancelled at once (an admitted one frees its slot for the next), a running one becomes canceling until its worker stops it. Returns its status and whether this call changed it; no row for an unknown id.';

create or replace function usher.cancel_waiting(
  p_action_ref text,
  p_reason text default null,
  p_limit integer default 1000,
  p_up_to_id bigint default null
)
returns integer
language plpgsql
as $$
declare
  v_ids bigint[];
  v_lanes text[];
  v_lane text;
  v_id bigint;
  v_count integer := 0;
begin
  if p_limit is null or p_limit < 1 then
    raise exception 'usher.cancel_waiting: limit must be >= 1 (got %)', p_limit using errcode = 'invalid_parameter_value';
  end if;
  -- Newest first: the tail of each lane goes before its head, so an admitted head that gives back
  -- its slot finds nothing of this purge left to admit.
  select array_agg(w.id order by w.id desc) into v_ids
  from (
    select e.id from usher.executions e
    where e.action_ref = p_action_ref and e.status in ('delayed', 'requested', 'scheduled')
      and (p_up_to_id is null or e.id <= p_up_to_id)
    order by e.id desc
    limit p_limit
  ) w;
  if v_ids is null then
    return 0;
  end if;
  -- Lock order as everywhere: every lane of the batch first, in key order (as complete_and_claim
  -- does), then the rows. lock_lane creates a lane row that is missing (pruned while idle): locking
  -- only the lane rows that existed let an admission create one and take it while this held the
  -- executions it wanted (a deadlock the concurrency hunt found). A row locked here cannot be
  -- claimed (claims skip locked rows), so cancel_execution, which takes its lane again (already
  -- held), ends it as a waiting or admitted one. A row claimed or ended since it was read is left
  -- alone (running ones are not this function's to stop), and a delayed row released into a lane
  -- since then is skipped (that lane is not locked here) and found by the next call.
  v_lanes := array(select distinct e.lane_key from usher.executions e where e.id = any (v_ids) and e.lane_key is not null order by 1);
  foreach v_lane in array v_lanes loop
    perform usher.lock_lane(v_lane);
  end loop;
  select array_agg(w.id order by w.id desc) into v_ids
  from (
    select e.id from usher.executions e
    where e.id = any (v_ids) and e.status in ('delayed', 'requested', 'scheduled')
      and (e.lane_key is null or e.lane_key = any (v_lanes))
    order by e.id
    for update
  ) w;
  foreach v_id in array coalesce(v_ids, '{}') loop
    if exists (select 1 from usher.cancel_execution(v_id, p_reason) c where c.changed) then
      v_count := v_count + 1;
    end if;
  end loop;
  return v_count;
end
$$;

comment on function usher.cancel_waiting(text, text, integer, bigint) is
  'Purges an action''s queue: cancels up to p_limit of its executions that have not started (delayed, waiting or admitted; newest first; with p_up_to_id, only ids up to it), each as usher.cancel_execution would, and returns how many. Running executions are left alone. Call it again until it returns 0 to empty the queue.';

create or replace function usher.expire_running_executions(p_timeout_grace_seconds integer, p_limit integer default 500)
returns integer
language plpgsql
as $$
declare
  v_row record;
  v_now timestamptz;
  v_status text;
  v_ended bigint[] := '{}';
  v_count integer := 0;
begin
  -- Lanes are locked in lane_key order, so concurrent sweeps cannot deadlock.
  for v_row in
    select e.id, e.lane_key, e.lease_token, e.worker_id, e.timeout_seconds
    from usher.executions e
    where e.status in ('running', 'canceling')
      and (e.lease_expires_at < clock_timestamp()
        or e.started_at + make_interval(secs => e.timeout_seconds + p_timeout_grace_seconds) < clock_timestamp())
    order by e.lane_key nulls last, e.id
    limit p_limit
  loop
    if v_row.lane_key is not null then
      perform usher.lock_lane(v_row.lane_key);
    end if;
    v_now := clock_timestamp();
    -- A row locked right now is being marked or renewed by its worker: leave it to the next sweep
    -- rather than wait (a heartbeat renews several rows in one statement, in its own order). The
    -- conditions are checked again under the lock: the worker's own mark may have just won.
    perform 1 from usher.executions e
    where e.id = v_row.id
      and e.lease_token = v_row.lease_token
      and (e.lease_expires_at < v_now
        or e.started_at + make_interval(secs => e.timeout_seconds + p_timeout_grace_seconds) < v_now)
    for update skip locked;
    if not found then
      continue;
    end if;
    if (select e.lease_expires_at < v_now from usher.executions e where e.id = v_row.id) then
      v_status := usher.conclude_attempt(v_row.id, v_row.lease_token, 'abandoned', null,
        format('lease expired: worker %s stopped renewing it', v_row.worker_id), true, false);
    else
      v_status := usher.conclude_attempt(v_row.id, v_row.lease_token, 'timeout', null,
        format('ran past timeout_seconds = %s and its worker did not stop it', v_row.timeout_seconds), true, false);
    end if;
    v_count := v_count + 1;
    if v_status in ('completed', 'failed', 'cancelled', 'timeout', 'abandoned') then
      v_ended := v_ended || v_row.id;
    end if;
  end loop;
  perform usher.notify_completed(v_ended);
  return v_count;
end
$$;

comment on function usher.expire_running_executions(integer, integer) is
  'Executor sweep: ends the attempts of running executions whose lease expired (abandoned) or that overran timeout_seconds plus a grace (timeout), retrying them when retries are left, and releases their slots. Re-checks the lease token under the lane lock, so a worker''s own mark always wins a race.';

create or replace function usher.cancel_overdue_waiting(p_limit integer default 1000)
returns integer
language plpgsql
as $$
declare
  v_lane record;
  v_now timestamptz := clock_timestamp();
  v_ids bigint[];
  v_all bigint[] := '{}';
begin
  for v_lane in
    with waiting as (
      select w.lane_key, split_part(w.lane_key, '#', 1) as scope from usher.waiting_lane_keys() w (lane_key)
    ),
    -- The policy of each scope, looked up once per scope rather than per lane.
    scope as materialized (
      select s.scope, p.queue_timeout_seconds, p.ref
      from (select distinct w.scope from waiting w) s
      cross join lateral usher.lane_policy(s.scope) p
    )
    select w.lane_key, p.queue_timeout_seconds, p.ref
    from waiting w
    join scope p on p.scope = w.scope
    left join usher.lanes l on l.lane_key = w.lane_key
    where p.queue_timeout_seconds is not null
      -- A blocked or paused lane holds its executions: they are not short of a slot.
      and l.blocked_by is null
      and coalesce(l.paused_until <= v_now, true)
  loop
    -- Waiting counts from when it could first be admitted: joining its lane, or the end of a retry's backoff.
    with overdue as (
      select e.id
      from usher.executions e
      where e.lane_key = v_lane.lane_key
        and e.status = 'requested'
        and greatest(e.queued_at, e.run_at) < v_now - make_interval(secs => v_lane.queue_timeout_seconds)
        and not usher.action_is_paused(e.action_ref)
      order by e.queue_position, e.id
      limit p_limit
      for update skip locked
    ),
    cancelled as (
      update usher.executions e
      set status = 'cancelled',
        result = jsonb_build_object(
          'reason', format('Waited longer than queue_timeout_seconds = %s in lane %s (policy %s)',
            v_lane.queue_timeout_seconds, v_lane.lane_key, v_lane.ref),
          'policy_ref', v_lane.ref),
        completed_at = v_now,
        updated_at = v_now
      from overdue
      where e.id = overdue.id
      returning e.id
    )
    select array_agg(cancelled.id) into v_ids from cancelled;
    v_all := v_all || coalesce(v_ids, '{}');
  end loop;
  perform usher.notify_completed(v_all);
  return cardinality(v_all);
end
$$;

comment on function usher.cancel_overdue_waiting(integer) is
  'Executor sweep: cancels executions that waited in their lane longer than its policy''s queue_timeout_seconds; the rest keep their order.';

create or replace function usher.delete_idle_lanes(p_idle_seconds integer default 60)
returns integer
language sql
as $$
  with idle as (
    select l.lane_key
    from usher.lanes l
    where l.active_count = 0
      and l.updated_at < now() - make_interval(secs => p_idle_seconds)
      -- A lane's row also carries its block, its pause and its rate-limit log: keep those.
      and l.blocked_by is null
      and coalesce(l.paused_until <= now(), true)
      and coalesce(l.rate_limited_until <= now(), true)
      and coalesce((select max(t) from unnest(l.recent_admissions) t)
        + make_interval(secs => (usher.lane_policy(l.lane_key)).rate_limit_window_seconds) < now(), true)
      and not exists (
        select 1 from usher.executions e where e.lane_key = l.lane_key and e.status = 'requested')
    for update skip locked
  ),
  deleted as (
    delete from usher.lanes l
    using idle
    where l.lane_key = idle.lane_key
      and l.active_count = 0
    returning l.lane_key
  )
  select count(*)::integer from deleted
$$;

comment on function usher.delete_idle_lanes(integer) is
  'Removes lane rows with no slot held, nothing waiting, and no block, pause or rate-limit window still in force; admission recreates a lane when it is needed again.';
