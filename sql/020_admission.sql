-- Admission: moving the oldest waiting executions of a lane into its free slots.
-- Lock order everywhere: the lane row first, then execution rows.
--
-- The entry points of the hot path (admit_lane, claim_scheduled, complete_and_claim,
-- end_execution, heartbeat_worker) run with plan_cache_mode = force_generic_plan, which holds for
-- everything they call. Their statements fit partial indexes whatever the parameters; with custom
-- plans, PL/pgSQL planned them again in every call, a third of a handoff's time. And with jit =
-- off: a generic plan estimates a LIMIT parameter as a tenth of the rows, and on a table of a
-- million rows that cost set off JIT compilation of a one-row claim, 8 ms each time.

create or replace function usher.admit_lane_head(p_lane_key text)
returns bigint[]
language plpgsql
as $$
declare
  v_lane usher.lanes;
  v_policy usher.policies;
  v_free integer;
  v_now timestamptz := clock_timestamp();
  v_candidate record;
  v_ids bigint[] := '{}';
  v_admitted integer;
  v_window interval;
  v_recent timestamptz[] := '{}';
  v_running_quota integer;
  v_total_quota integer;
  v_usage usher.scope_usage;
  v_any_paused boolean;
  v_skip_backoff boolean;
  -- The status to re-check, as a variable inside IS TRUE: a literal would match the predicate of
  -- the partial index executions_requested_by_lane, and a plain comparison would be an index
  -- condition on executions_by_action_status; with either, a generic plan could read every
  -- waiting row instead of fetching these few by primary key.
  v_requested constant text := 'requested';
  -- A cursor is planned for its first rows: an ordered walk of executions_requested_by_lane from
  -- the head, however long the lane. As a plain query, a generic plan may read and sort the whole lane.
  lane_head cursor (c_lane_key text, c_any_paused boolean, c_skip_backoff boolean, c_now timestamptz, c_limit integer) for
    select e.id, e.run_at
    from usher.executions e
    where e.lane_key = c_lane_key
      and e.status = 'requested'
      and (not c_any_paused or not usher.action_is_paused(e.action_ref))
      and (not c_skip_backoff or e.run_at is null or e.run_at <= c_now)
    order by e.queue_position, e.id
    limit c_limit;
begin
  select * into v_lane from usher.lanes l where l.lane_key = p_lane_key;
  if v_lane.blocked_by is not null or v_lane.paused_until > v_now then
    return '{}';
  end if;
  v_policy := usher.lane_policy(p_lane_key);
  if v_policy.threshold is null then
    -- No slot limit: drain in batches, still head first.
    v_free := 1000;
  else
    v_free := greatest(v_policy.threshold - v_lane.active_count, 0);
  end if;
  if v_policy.rate_limit_max_executions is not null then
    -- Sliding window: only the admissions still inside it count.
    v_window := make_interval(secs => v_policy.rate_limit_window_seconds);
    v_recent := array(select t from unnest(v_lane.recent_admissions) t where t > v_now - v_window order by t);
    v_free := least(v_free, greatest(v_policy.rate_limit_max_executions - cardinality(v_recent), 0));
  end if;
  v_running_quota := usher.policy_quota(v_policy, 'running_executions');
  v_total_quota := usher.policy_quota(v_policy, 'executions_total');
  if v_free > 0 and (v_running_quota is not null or v_total_quota is not null) then
    -- Quotas count across the whole scope, all its lanes: lock order is lane, then scope usage.
    insert into usher.scope_usage (scope_key) values (split_part(p_lane_key, '#', 1)) on conflict do nothing;
    select * into v_usage from usher.scope_usage u where u.scope_key = split_part(p_lane_key, '#', 1) for update;
    if v_running_quota is not null then
      v_free := least(v_free, greatest(v_running_quota - v_usage.active_count, 0));
    end if;
    if v_total_quota is not null then
      v_free := least(v_free, greatest(v_total_quota - v_usage.admitted_total, 0)::integer);
    end if;
  end if;
  if v_free = 0 then
    return '{}';
  end if;
  -- Pauses are rare: when there is none, rows are not checked one by one.
  v_any_paused := usher.anything_paused();

  -- Head first. Executions of a paused action or pack are passed over (they keep their places).
  -- A retry still in its backoff holds the lane at its place, unless the policy says skip.
  v_skip_backoff := coalesce(v_policy.on_failure, 'wait') = 'skip';
  for v_candidate in lane_head(p_lane_key, v_any_paused, v_skip_backoff, v_now, v_free) loop
    exit when v_candidate.run_at > v_now;
    v_ids := v_ids || v_candidate.id;
  end loop;
  if cardinality(v_ids) = 0 then
    return '{}';
  end if;

  -- One timestamp for the whole batch, so (scheduled_at, queue_position) orders admissions exactly.
  with admitted as (
    update usher.executions e
    set status = 'scheduled',
      scheduled_at = v_now,
      run_at = null,
      scope_counted = v_running_quota is not null,
      updated_at = v_now
    from unnest(v_ids) as a (id)
    where e.id = a.id
      and (e.status = v_requested) is true
    returning e.id, e.action_ref, e.attempt, coalesce(e.queued_at, e.created_at) as waiting_since
  ),
  -- The event stream's record of each admission (the row trigger leaves admissions to this statement).
  recorded as (
    insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
    select a.id, a.action_ref, 'scheduled', 'requested', a.attempt, extract(epoch from v_now - a.waiting_since)
    from admitted a
    order by a.id
  )
  select coalesce(array_agg(a.id order by a.id), '{}') into v_ids from admitted a;
  v_admitted := cardinality(v_ids);
  if v_admitted = 0 then
    return '{}';
  end if;
  if v_usage.scope_key is not null then
    update usher.scope_usage u
    set admitted_total = u.admitted_total + v_admitted,
      active_count = u.active_count + case when v_running_quota is not null then v_admitted else 0 end,
      updated_at = v_now
    where u.scope_key = v_usage.scope_key;
  end if;
  if v_window is not null then
    v_recent := v_recent || array_fill(v_now, array[v_admitted]);
  end if;
  update usher.lanes
  set active_count = active_count + v_admitted,
    total_admitted = total_admitted + v_admitted,
    recent_admissions = v_recent,
    -- At the limit: the window reopens when the oldest of the last max admissions leaves it.
    rate_limited_until = case
      when cardinality(v_recent) >= v_policy.rate_limit_max_executions
        then v_recent[cardinality(v_recent) - v_policy.rate_limit_max_executions + 1] + v_window
    end,
    updated_at = v_now
  where lane_key = p_lane_key;
  if v_window is not null and cardinality(v_recent) >= v_policy.rate_limit_max_executions then
    -- The executor sets its timer for the reopening.
    perform pg_notify('usher.execution_requested', '');
  end if;
  return v_ids;
end
$$;

comment on function usher.admit_lane_head(text) is
  'Admits the head of a lane into its free slots, unless the lane is blocked or paused, and returns the ids admitted. Sends no wake-up to workers: the caller does, or claims them itself. The caller must hold the lane row lock.';

create or replace function usher.admit_locked_lane(p_lane_key text)
returns integer
language plpgsql
as $$
declare
  v_admitted integer := cardinality(usher.admit_lane_head(p_lane_key));
begin
  if v_admitted > 0 then
    perform pg_notify('usher.execution_scheduled', '');
  end if;
  return v_admitted;
end
$$;

comment on function usher.admit_locked_lane(text) is
  'Admits the head of a lane into its free slots and wakes the workers. The caller must hold the lane row lock. Returns how many were admitted.';

create or replace function usher.release_slots(p_lane_key text, p_count integer, p_scope_counted integer)
returns bigint[]
language plpgsql
as $$
begin
  if p_scope_counted > 0 then
    update usher.scope_usage u
    set active_count = u.active_count - p_scope_counted, updated_at = clock_timestamp()
    where u.scope_key = split_part(p_lane_key, '#', 1);
    -- Slots of the scope's running quota are free: other lanes of the scope may now admit.
    perform pg_notify('usher.execution_requested', '');
  end if;
  update usher.lanes
  set active_count = active_count - p_count,
    updated_at = clock_timestamp()
  where lane_key = p_lane_key;
  if not found then
    raise exception 'usher: lane % has no row while % of its executions held a slot', p_lane_key, p_count
      using errcode = 'data_corrupted';
  end if;
  return usher.admit_lane_head(p_lane_key);
end
$$;

comment on function usher.release_slots(text, integer, integer) is
  'Gives p_count slots of a lane back (p_scope_counted of them also to its scope''s running quota) and admits the next waiting executions, in the caller''s transaction; returns the ids admitted, without waking workers. The caller must hold the lane row lock.';

create or replace function usher.release_lane_slots(p_lane_keys text[], p_counts integer[], p_scope_counted integer[])
returns bigint[]
language plpgsql
as $$
declare
  v_now timestamptz := clock_timestamp();
  v_any_paused boolean;
  v_plain_keys text[];
  v_plain_counts integer[];
  v_thresholds integer[];
  v_skip_backoff boolean[];
  v_other record;
  v_policy usher.policies;
  v_holding integer;
  v_free integer;
  v_admitted bigint[] := '{}';
  v_lanes_written integer;
  -- As in admit_lane_head: a variable inside IS TRUE keeps the update on the primary key.
  v_requested constant text := 'requested';
begin
  -- A lane whose policy is a slot limit alone (no rate limit, no quota) while nothing is paused
  -- gives back its slots and admits its next in plain statements when it is the only lane, or in
  -- the set-based statement below with every other such lane of the batch. Anything else goes
  -- through release_slots, lane by lane.
  v_any_paused := usher.anything_paused();

  -- One plain lane (every step of a threshold-1 lane): the same admission in plain statements on
  -- that lane. Given one lane, the set-based statement below cost a serial step more backend CPU:
  -- 864, 939, 869, 985 µs against 803, 818, 793, 950 (bench/step-loop.ts serial, interleaved pairs).
  if cardinality(p_lane_keys) = 1 and p_scope_counted[1] = 0 and not v_any_paused then
    v_policy := usher.lane_policy(p_lane_keys[1]);
    if v_policy.rate_limit_max_executions is null and coalesce(v_policy.quotas, '[]'::jsonb) = '[]'::jsonb then
      select l.active_count - p_counts[1],
        case
          when l.blocked_by is not null or l.paused_until > v_now then 0
          when v_policy.threshold is null then 1000
          else greatest(v_policy.threshold - (l.active_count - p_counts[1]), 0)
        end
      into v_holding, v_free
      from usher.lanes l
      where l.lane_key = p_lane_keys[1];
      if not found then
        raise exception 'usher: 1 of 1 lanes releasing slots have no row' using errcode = 'data_corrupted';
      end if;
      if v_free > 0 then
        with head as (
          select e.id, count(*) filter (where e.run_at > v_now) over w as held
          from usher.executions e
          where e.lane_key = p_lane_keys[1]
            and e.status = 'requested'
            and (not coalesce(v_policy.on_failure = 'skip', false) or e.run_at is null or e.run_at <= v_now)
          window w as (order by e.queue_position, e.id)
          order by e.queue_position, e.id
          limit v_free
        ),
        admitted as (
          update usher.executions e
          set status = 'scheduled', scheduled_at = v_now, run_at = null, scope_counted = false, updated_at = v_now
          from head
          where e.id = head.id
            and head.held = 0
            and (e.status = v_requested) is true
          returning e.id, e.action_ref, e.attempt, coalesce(e.queued_at, e.created_at) as waiting_since
        ),
        recorded as (
          insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
          select a.id, a.action_ref, 'scheduled', 'requested', a.attempt, extract(epoch from v_now - a.waiting_since)
          from admitted a
          order by a.id
        )
        select coalesce(array_agg(a.id order by a.id), '{}') into v_admitted from admitted a;
      end if;
      update usher.lanes l
      set active_count = v_holding + cardinality(v_admitted),
        total_admitted = l.total_admitted + cardinality(v_admitted),
        recent_admissions = case when cardinality(v_admitted) > 0 then '{}' else l.recent_admissions end,
        rate_limited_until = case when cardinality(v_admitted) > 0 then null else l.rate_limited_until end,
        updated_at = v_now
      where l.lane_key = p_lane_keys[1];
      return v_admitted;
    end if;
  end if;

  -- Materialized: inlined, the policy lookup ran once per lane instead of once per scope.
  with scopes as materialized (
    select s.scope, p.threshold, p.rate_limit_max_executions, p.quotas, p.on_failure
    from (select distinct split_part(k, '#', 1) as scope from unnest(p_lane_keys) k) s
    cross join lateral usher.lane_policy(s.scope) p
  )
  select array_agg(r.lane_key order by r.lane_key), array_agg(r.count order by r.lane_key),
    array_agg(s.threshold order by r.lane_key), array_agg(coalesce(s.on_failure = 'skip', false) order by r.lane_key)
  into v_plain_keys, v_plain_counts, v_thresholds, v_skip_backoff
  from unnest(p_lane_keys, p_counts, p_scope_counted) as r (lane_key, count, scope_counted)
  join scopes s on s.scope = split_part(r.lane_key, '#', 1)
  where not v_any_paused
    and r.scope_counted = 0
    and s.rate_limit_max_executions is null
    and coalesce(s.quotas, '[]'::jsonb) = '[]'::jsonb;

  -- Compared with every plain key, so skipped when every lane is plain (the usual case).
  if coalesce(cardinality(v_plain_keys), 0) < cardinality(p_lane_keys) then
    for v_other in
      select r.lane_key, r.count, r.scope_counted
      from unnest(p_lane_keys, p_counts, p_scope_counted) as r (lane_key, count, scope_counted)
      where r.lane_key <> all (coalesce(v_plain_keys, '{}'))
      order by r.lane_key
    loop
      v_admitted := v_admitted || usher.release_slots(v_other.lane_key, v_other.count, v_other.scope_counted);
    end loop;
  end if;
  if v_plain_keys is null then
    return v_admitted;
  end if;

  -- What admit_lane_head does for one lane, for all of them at once: each lane's free slots are
  -- its threshold less what it holds after this release (1000 at a time without threshold), filled
  -- head first; a retry in its backoff holds the rest of its lane unless the policy skips it; a
  -- blocked or paused lane admits nothing. The lane row is written once, release and admission together.
  with lane as (
    select l.lane_key, r.count, l.active_count - r.count as holding,
      case
        when l.blocked_by is not null or l.paused_until > v_now then 0
        when r.threshold is null then 1000
        else greatest(r.threshold - (l.active_count - r.count), 0)
      end as free,
      r.skip_backoff
    from unnest(v_plain_keys, v_plain_counts, v_thresholds, v_skip_backoff) as r (lane_key, count, threshold, skip_backoff)
    join usher.lanes l on l.lane_key = r.lane_key
  ),
  head as (
    select h.id, h.held
    from lane
    cross join lateral (
      -- held: how many of the lane up to this one are retries still in their backoff.
      select e.id, count(*) filter (where e.run_at > v_now) over w as held
      from usher.executions e
      where e.lane_key = lane.lane_key
        and e.status = 'requested'
        and (not lane.skip_backoff or e.run_at is null or e.run_at <= v_now)
      window w as (order by e.queue_position, e.id)
      order by e.queue_position, e.id
      limit lane.free
    ) h
    where lane.free > 0
  ),
  admitted as (
    update usher.executions e
    set status = 'scheduled',
      scheduled_at = v_now,
      run_at = null,
      scope_counted = false,
      updated_at = v_now
    from head
    where e.id = head.id
      and head.held = 0
      and (e.status = v_requested) is true
    returning e.id, e.lane_key, e.action_ref, e.attempt, coalesce(e.queued_at, e.created_at) as waiting_since
  ),
  recorded as (
    insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
    select a.id, a.action_ref, 'scheduled', 'requested', a.attempt, extract(epoch from v_now - a.waiting_since)
    from admitted a
    order by a.id
  ),
  -- Each lane's count, looked up by key: joined to the lanes, the generic plan's estimate of a
  -- few rows made it a nested loop over every admitted lane for every lane, quadratic in the batch.
  per_lane as materialized (
    select jsonb_object_agg(c.lane_key, c.admitted) as admitted
    from (select a.lane_key, count(*) as admitted from admitted a group by a.lane_key) c
  ),
  written as (
    update usher.lanes l
    set active_count = lane.holding + n.admitted,
      total_admitted = l.total_admitted + n.admitted,
      recent_admissions = case when n.admitted > 0 then '{}' else l.recent_admissions end,
      rate_limited_until = case when n.admitted > 0 then null else l.rate_limited_until end,
      updated_at = v_now
    from lane
    cross join lateral (
      select coalesce((p.admitted ->> lane.lane_key)::integer, 0) as admitted from per_lane p
    ) n
    where l.lane_key = lane.lane_key
    returning l.lane_key
  )
  select v_admitted || coalesce((select array_agg(a.id order by a.id) from admitted a), '{}'),
    (select count(*) from written)
  into v_admitted, v_lanes_written;
  if v_lanes_written <> cardinality(v_plain_keys) then
    raise exception 'usher: % of % lanes releasing slots have no row', cardinality(v_plain_keys) - v_lanes_written, cardinality(v_plain_keys)
      using errcode = 'data_corrupted';
  end if;
  return v_admitted;
end
$$;

comment on function usher.release_lane_slots(text[], integer[], integer[]) is
  'Gives slots back to several lanes at once (p_counts[i] to p_lane_keys[i], p_scope_counted[i] of them also to its scope''s running quota) and admits each lane''s next waiting executions, in the caller''s transaction; returns the ids admitted, without waking workers. Lanes under a plain slot limit are handled together in one statement (a single such lane in plain statements of its own). The caller must hold the lane row locks.';

create or replace function usher.release_slot(p_lane_key text, p_scope_counted boolean)
returns integer
language plpgsql
as $$
declare
  v_admitted integer := cardinality(usher.release_slots(p_lane_key, 1, case when p_scope_counted then 1 else 0 end));
begin
  if v_admitted > 0 then
    perform pg_notify('usher.execution_scheduled', '');
  end if;
  return v_admitted;
end
$$;

comment on function usher.release_slot(text, boolean) is
  'Gives one slot of a lane back (and of its scope''s running quota, when the execution was counted there), admits the next waiting execution and wakes the workers, in the caller''s transaction. The caller must hold the lane row lock. Returns how many were admitted.';

create or replace function usher.lock_lane(p_lane_key text)
returns void
language plpgsql
as $$
begin
  perform 1 from usher.lanes where lane_key = p_lane_key for update;
  if not found then
    insert into usher.lanes (lane_key) values (p_lane_key) on conflict do nothing;
    perform 1 from usher.lanes where lane_key = p_lane_key for update;
  end if;
end
$$;

comment on function usher.lock_lane(text) is 'Locks a lane row for the rest of the transaction, creating it if needed.';

create or replace function usher.admit_lane(p_lane_key text)
returns integer
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
as $$
declare
  v_admitted integer;
  v_policy usher.policies;
  v_now timestamptz;
  v_ids bigint[];
  v_holding boolean;
  v_rate_limited boolean;
  v_budget integer;
  v_budget_spent boolean;
begin
  perform usher.lock_lane(p_lane_key);
  v_admitted := usher.admit_locked_lane(p_lane_key);

  -- Whoever still waits: under method "cancel" there is no slot for them; otherwise only
  -- the lane's max_queue_length may wait, and newer ones beyond it are turned away.
  v_policy := usher.lane_policy(p_lane_key);
  if v_policy.id is not null then
    v_now := clock_timestamp();
    -- A paused or blocked lane, a paused action and a retry in its backoff are holding, not
    -- short of a slot: method cancel leaves them waiting. The queue-length cap counts everyone.
    select l.paused_until > v_now or l.blocked_by is not null into v_holding
    from usher.lanes l where l.lane_key = p_lane_key;
    select l.rate_limited_until > v_now into v_rate_limited from usher.lanes l where l.lane_key = p_lane_key;
    v_budget := usher.policy_quota(v_policy, 'executions_total');
    v_budget_spent := v_budget is not null and v_budget <= coalesce(
      (select u.admitted_total from usher.scope_usage u where u.scope_key = split_part(p_lane_key, '#', 1)), 0);
    with turned_away as (
      select e.id
      from usher.executions e
      where e.lane_key = p_lane_key
        and e.status = 'requested'
        and (v_budget_spent
          or v_policy.method <> 'cancel'
          or (not coalesce(v_holding, false) and coalesce(e.run_at <= v_now, true) and not usher.action_is_paused(e.action_ref)))
      order by e.queue_position, e.id
      offset case when v_policy.method = 'cancel' or v_budget_spent then 0 else v_policy.max_queue_length end
      for update
    ),
    cancelled as (
      update usher.executions e
      set status = 'cancelled',
        result = case
          when v_budget_spent then jsonb_build_object(
            'reason', format('QuotaExceeded: executions_total of %s reached for scope %s (policy %s)',
              v_budget, split_part(p_lane_key, '#', 1), v_policy.ref),
            'error', 'QuotaExceeded',
            'quota_type', 'executions_total',
            'limit', v_budget,
            'policy_ref', v_policy.ref)
          when v_policy.method = 'cancel' and coalesce(v_rate_limited, false) then jsonb_build_object(
            'reason', format('Rate limit reached for action %s: lane %s already admitted %s executions in the last %s seconds and policy %s cancels instead of queueing',
              e.action_ref, p_lane_key, v_policy.rate_limit_max_executions, v_policy.rate_limit_window_seconds, v_policy.ref),
            'policy_ref', v_policy.ref,
            'limit', 'rate_limit')
          when v_policy.method = 'cancel' then jsonb_build_object(
            'reason', format('No free slot for action %s: lane %s is at its threshold of %s and policy %s cancels instead of queueing',
              e.action_ref, p_lane_key, v_policy.threshold, v_policy.ref),
            'policy_ref', v_policy.ref,
            'limit', 'threshold')
          else jsonb_build_object(
            'reason', format('Queue full for action %s: lane %s already holds %s waiting executions (policy %s)',
              e.action_ref, p_lane_key, v_policy.max_queue_length, v_policy.ref),
            'policy_ref', v_policy.ref,
            'limit', 'max_queue_length')
        end,
        completed_at = v_now,
        updated_at = v_now
      from turned_away
      where e.id = turned_away.id
      returning e.id
    )
    select array_agg(cancelled.id) into v_ids from cancelled;
    perform usher.notify_completed(v_ids);
  end if;
  return v_admitted;
end
$$;

comment on function usher.admit_lane(text) is
  'Executor step for one lane: admits into free slots, then applies method "cancel" and max_queue_length to those still waiting. Returns how many were admitted.';

create or replace function usher.waiting_lane_keys()
returns setof text
language sql
stable
as $$
  -- One probe of executions_requested_by_lane per lane (a skip scan): reading every waiting row
  -- made each admission pass as slow as the backlog was long.
  with recursive waiting (lane_key) as (
    (select e.lane_key from usher.executions e
     where e.status = 'requested' and e.lane_key is not null
     order by e.lane_key
     limit 1)
    union all
    select (select e.lane_key from usher.executions e
            where e.status = 'requested' and e.lane_key > w.lane_key
            order by e.lane_key
            limit 1)
    from waiting w
    where w.lane_key is not null
  )
  select w.lane_key from waiting w where w.lane_key is not null
$$;

comment on function usher.waiting_lane_keys() is 'The lanes that have waiting (requested) executions, in key order.';

-- The result changed (plain instead of the queue length): a changed return type needs the old function dropped first.
drop function if exists usher.admission_candidates();

create or replace function usher.admission_candidates()
returns table (lane_key text, plain boolean)
language sql
stable
as $$
  with waiting as (
    select w.lane_key, split_part(w.lane_key, '#', 1) as scope from usher.waiting_lane_keys() w (lane_key)
  ),
  -- A lane follows the policy of its scope: looked up once per scope (materialized: inlined, the
  -- lookup ran once per lane).
  scope as materialized (
    select s.scope, p.threshold, p.method, p.max_queue_length, p.rate_limit_max_executions, p.quotas
    from (select distinct w.scope from waiting w) s
    cross join lateral usher.lane_policy(s.scope) p
  ),
  lane as (
    select w.lane_key, p.threshold, p.method, p.rate_limit_max_executions, p.quotas,
      l.blocked_by, l.paused_until, l.active_count,
      -- More waiting than max_queue_length: found by walking at most that many from the head.
      p.max_queue_length is not null and exists (
        select 1 from usher.executions e
        where e.lane_key = w.lane_key and e.status = 'requested'
        order by e.queue_position, e.id
        offset p.max_queue_length
        limit 1) as over_max_queue
    from waiting w
    join scope p on p.scope = w.scope
    left join usher.lanes l on l.lane_key = w.lane_key
  )
  select lane.lane_key,
    lane.rate_limit_max_executions is null
      and coalesce(lane.quotas, '[]'::jsonb) = '[]'::jsonb
      and coalesce(lane.method, 'enqueue') = 'enqueue'
      and not lane.over_max_queue
      -- A sub-select, so it runs once for the pass rather than once per lane.
      and not (select usher.anything_paused())
  from lane
  where ((lane.blocked_by is null and coalesce(lane.paused_until <= clock_timestamp(), true))
      and (lane.threshold is null or lane.method = 'cancel' or coalesce(lane.active_count, 0) < lane.threshold))
    or lane.over_max_queue
  order by lane.lane_key
$$;

comment on function usher.admission_candidates() is
  'Lanes with waiting executions that admission can act on: neither blocked nor paused and with a free slot or method cancel, or with more waiting than their max_queue_length. plain: the lane only needs its free slots filled (a slot limit alone, nothing to turn away, nothing paused).';

create or replace function usher.admit_plain_lanes(p_lane_keys text[])
returns integer
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
as $$
declare
  v_locked text[];
  v_admitted integer;
begin
  -- Lanes are created on their first admission, in key order, so executors admitting overlapping
  -- batches cannot deadlock on each other's new rows.
  insert into usher.lanes (lane_key)
  select k from unnest(p_lane_keys) k order by k
  on conflict do nothing;
  -- A lane locked by someone else is passed over rather than waited for, so one busy lane holds
  -- up no other: a worker completing in it admits its next itself, and whoever else holds a lane
  -- to change it (a pause, a cancel) wakes the executor when done. A row deleted meanwhile by
  -- delete_idle_lanes is made again on the next pass.
  select array_agg(l.lane_key order by l.lane_key) into v_locked
  from (select l.lane_key from usher.lanes l where l.lane_key = any (p_lane_keys) order by l.lane_key for update skip locked) l;
  if v_locked is null then
    return 0;
  end if;
  v_admitted := cardinality(usher.release_lane_slots(v_locked,
    array_fill(0, array[cardinality(v_locked)]), array_fill(0, array[cardinality(v_locked)])));
  if v_admitted > 0 then
    perform pg_notify('usher.execution_scheduled', '');
  end if;
  return v_admitted;
end
$$;

comment on function usher.admit_plain_lanes(text[]) is
  'Executor step for lanes that only need their free slots filled (admission_candidates().plain): admits the head of each into its free slots in one transaction, passing over lanes locked by others, and wakes the workers. Returns how many were admitted.';

create or replace procedure usher.admit_queued(inout lanes_visited integer default 0, inout admitted integer default 0)
language plpgsql
as $$
declare
  v_lane record;
  v_plain text[] := '{}';
begin
  for v_lane in select c.lane_key, c.plain from usher.admission_candidates() c loop
    lanes_visited := lanes_visited + 1;
    if v_lane.plain then
      -- Up to 100 lanes a transaction: a burst across many lanes starts without a commit per lane,
      -- and no lane is held locked for long.
      v_plain := v_plain || v_lane.lane_key;
      continue when cardinality(v_plain) < 100;
      admitted := admitted + usher.admit_plain_lanes(v_plain);
      v_plain := '{}';
    else
      admitted := admitted + usher.admit_lane(v_lane.lane_key);
    end if;
    -- A commit after each lane that is not plain and after each batch of plain ones: a lane lock
    -- is never held while another lane waits its turn.
    commit;
  end loop;
  if cardinality(v_plain) > 0 then
    admitted := admitted + usher.admit_plain_lanes(v_plain);
    commit;
  end if;
end
$$;

comment on procedure usher.admit_queued(integer, integer) is
  'Runs admission for every lane that can act (CALL usher.admit_queued();), committing lane by lane, or 100 lanes at a time where they only need their free slots filled. Safe to run from any number of executors at once.';

create or replace function usher.release_due_delayed(p_limit integer default 1000)
returns integer
language plpgsql
as $$
declare
  v_row record;
  v_now timestamptz := clock_timestamp();
  v_released integer := 0;
  v_paused boolean;
begin
  -- In run_at order, so executions due together join their lane in the order they were due.
  for v_row in
    select e.id, e.lane_key, e.action_ref, e.queue_position
    from usher.executions e
    where e.status = 'delayed'
      and e.run_at <= v_now
    order by e.run_at, e.id
    limit p_limit
    for update skip locked
  loop
    v_paused := usher.action_is_paused(v_row.action_ref);
    update usher.executions e
    set status = case when v_row.lane_key is null and not v_paused then 'scheduled' else 'requested' end,
      lane_key = case when v_row.lane_key is null and v_paused then 'action:' || v_row.action_ref else v_row.lane_key end,
      scheduled_at = case when v_row.lane_key is null and not v_paused then v_now end,
      -- A delayed start takes its place now; a retry of an execution without lane keeps its own.
      queue_position = coalesce(v_row.queue_position, nextval(pg_get_serial_sequence('usher.executions', 'id'))),
      queued_at = coalesce(e.queued_at, v_now),
      updated_at = v_now
    where e.id = v_row.id;
    v_released := v_released + 1;
  end loop;
  if v_released > 0 then
    perform pg_notify('usher.execution_requested', '');
    perform pg_notify('usher.execution_scheduled', '');
  end if;
  return v_released;
end
$$;

comment on function usher.release_due_delayed(integer) is
  'Executor step: delayed executions whose run_at has come join their lane (taking their place there now), or are admitted at once when no policy governs them.';

create or replace function usher.next_wakeup_at()
returns timestamptz
language sql
stable
as $$
  select least(
    (select min(e.run_at) from usher.executions e where e.status = 'delayed'),
    (select min(e.run_at) from usher.executions e where e.status = 'requested' and e.run_at > clock_timestamp()),
    (select min(l.paused_until) from usher.lanes l where l.paused_until > clock_timestamp()),
    (select min(l.rate_limited_until) from usher.lanes l where l.rate_limited_until > clock_timestamp())
  )
$$;

comment on function usher.next_wakeup_at() is
  'The next moment admission may change by the clock alone: a delayed start, the end of a retry backoff, a lane pause running out, or a rate-limit window reopening. The executor sleeps until then at most.';
