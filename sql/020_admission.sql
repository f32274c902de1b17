-- Admission: moving the oldest waiting executions of a lane into its free slots.
-- Lock order everywhere: the lane row first, then execution rows.

create or replace function usher.admit_locked_lane(p_lane_key text)
returns integer
language plpgsql
as $$
declare
  v_policy usher.policies;
  v_active integer;
  v_free integer;
  v_now timestamptz := clock_timestamp();
  v_ids bigint[];
begin
  select l.active_count into v_active from usher.lanes l where l.lane_key = p_lane_key;
  v_policy := usher.lane_policy(p_lane_key);
  if v_policy.threshold is null then
    -- No slot limit: drain in batches, still oldest first.
    v_free := 1000;
  else
    v_free := greatest(v_policy.threshold - v_active, 0);
  end if;
  if v_free = 0 then
    return 0;
  end if;

  -- One timestamp for the whole batch, so (scheduled_at, id) orders admissions exactly.
  with next_waiting as (
    select e.id
    from usher.executions e
    where e.lane_key = p_lane_key
      and e.status = 'requested'
    order by e.id
    limit v_free
    for update
  ),
  admitted as (
    update usher.executions e
    set status = 'scheduled',
      scheduled_at = v_now,
      updated_at = v_now
    from next_waiting
    where e.id = next_waiting.id
    returning e.id
  )
  select array_agg(admitted.id) into v_ids from admitted;

  if v_ids is null then
    return 0;
  end if;
  update usher.lanes
  set active_count = active_count + cardinality(v_ids),
    total_admitted = total_admitted + cardinality(v_ids),
    updated_at = v_now
  where lane_key = p_lane_key;
  perform pg_notify('usher.execution_scheduled', '');
  return cardinality(v_ids);
end
$$;

comment on function usher.admit_locked_lane(text) is
  'Admits the oldest waiting executions of a lane into its free slots. The caller must hold the lane row lock.';

create or replace function usher.release_slot(p_lane_key text)
returns integer
language plpgsql
as $$
begin
  update usher.lanes
  set active_count = active_count - 1,
    updated_at = clock_timestamp()
  where lane_key = p_lane_key;
  if not found then
    raise exception 'usher: lane % has no row while one of its executions held a slot', p_lane_key
      using errcode = 'data_corrupted';
  end if;
  return usher.admit_locked_lane(p_lane_key);
end
$$;

comment on function usher.release_slot(text) is
  'Gives one slot of a lane back and admits the next waiting execution, in the caller''s transaction. The caller must hold the lane row lock. Returns how many were admitted.';

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
as $$
declare
  v_admitted integer;
  v_policy usher.policies;
  v_now timestamptz;
  v_ids bigint[];
begin
  perform usher.lock_lane(p_lane_key);
  v_admitted := usher.admit_locked_lane(p_lane_key);

  -- Whoever still waits: under method "cancel" there is no slot for them; otherwise only
  -- the lane's max_queue_length may wait, and newer ones beyond it are turned away.
  v_policy := usher.lane_policy(p_lane_key);
  if v_policy.id is not null then
    v_now := clock_timestamp();
    with turned_away as (
      select e.id
      from usher.executions e
      where e.lane_key = p_lane_key
        and e.status = 'requested'
      order by e.id
      offset case when v_policy.method = 'cancel' then 0 else v_policy.max_queue_length end
      for update
    ),
    cancelled as (
      update usher.executions e
      set status = 'cancelled',
        result = case
          when v_policy.method = 'cancel' then jsonb_build_object(
            'reason', format('No free slot for action %s: lane %s is at its threshold of %s and policy %s cancels instead of queueing',
              e.action_ref, p_lane_key, v_policy.threshold, v_policy.ref),
            'policy_ref', v_policy.ref)
          else jsonb_build_object(
            'reason', format('Queue full for action %s: lane %s already holds %s waiting executions (policy %s)',
              e.action_ref, p_lane_key, v_policy.max_queue_length, v_policy.ref),
            'policy_ref', v_policy.ref)
        end,
        completed_at = v_now,
        updated_at = v_now
      from turned_away
      where e.id = turned_away.id
      returning e.id
    )
    select array_agg(cancelled.id) into v_ids from cancelled;
    perform usher.notify_ids('usher.execution_completed', v_ids);
  end if;
  return v_admitted;
end
$$;

comment on function usher.admit_lane(text) is
  'Executor step for one lane: admits into free slots, then applies method "cancel" and max_queue_length to those still waiting. Returns how many were admitted.';

create or replace function usher.admission_candidates()
returns table (lane_key text, queue_length bigint)
language sql
stable
as $$
  with waiting as (
    select e.lane_key, count(*) as queue_length
    from usher.executions e
    where e.status = 'requested'
    group by e.lane_key
  )
  select w.lane_key, w.queue_length
  from waiting w
  left join usher.lanes l on l.lane_key = w.lane_key
  cross join lateral usher.lane_policy(w.lane_key) p
  where p.threshold is null
    or p.method = 'cancel'
    or coalesce(l.active_count, 0) < p.threshold
    or w.queue_length > p.max_queue_length
  order by w.lane_key
$$;

comment on function usher.admission_candidates() is
  'Lanes with waiting executions that admission can act on: a free slot, method cancel, or a queue over its max length.';

create or replace procedure usher.admit_queued(inout lanes_visited integer default 0, inout admitted integer default 0)
language plpgsql
as $$
declare
  v_lane record;
begin
  for v_lane in select c.lane_key from usher.admission_candidates() c loop
    admitted := admitted + usher.admit_lane(v_lane.lane_key);
    lanes_visited := lanes_visited + 1;
    -- One transaction per lane: a lane lock is never held while another lane is worked on.
    commit;
  end loop;
end
$$;

comment on procedure usher.admit_queued(integer, integer) is
  'Runs admission for every lane that can act (CALL usher.admit_queued();), committing lane by lane. Safe to run from any number of executors at once.';
