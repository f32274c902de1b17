-- Views for psql, and the invariant check.

create or replace view usher.queue_stats as
select
  a.ref as action_ref,
  count(e.id) filter (where e.status = 'requested') as queue_length,
  count(e.id) filter (where e.status in ('scheduled', 'running', 'canceling')) as active_count,
  (usher.effective_policy(a.ref)).threshold as max_concurrent,
  min(e.created_at) filter (where e.status = 'requested') as oldest_enqueued_at,
  count(e.id) as total_enqueued,
  count(e.id) filter (where e.status = 'completed') as total_completed,
  greatest(a.updated_at, max(e.updated_at)) as last_updated,
  usher.action_is_paused(a.ref) as paused,
  count(e.id) filter (where e.status = 'delayed') as delayed_count
from usher.actions a
left join usher.executions e on e.action_ref = a.ref
group by a.ref, a.updated_at;

comment on view usher.queue_stats is
  'One row per action, computed from usher.executions: waiting (queue_length), holding a slot (active_count), the threshold of the policy that governs new executions (max_concurrent, null = no limit), and totals.';
comment on column usher.queue_stats.queue_length is 'Executions waiting in a lane (requested).';
comment on column usher.queue_stats.active_count is 'Executions holding a slot: scheduled, running or canceling.';
comment on column usher.queue_stats.max_concurrent is 'Threshold of the effective policy per lane; null when no policy limits it.';
comment on column usher.queue_stats.total_completed is 'Executions that ended with status completed.';
comment on column usher.queue_stats.action_ref is 'The action.';
comment on column usher.queue_stats.paused is 'Whether the action or its pack is paused (nothing of it is admitted).';
comment on column usher.queue_stats.delayed_count is 'Executions waiting for their run_at before joining a lane.';
comment on column usher.queue_stats.oldest_enqueued_at is 'Enqueue time of the oldest waiting execution.';
comment on column usher.queue_stats.total_enqueued is 'Executions of the action in the table, in any status.';
comment on column usher.queue_stats.last_updated is 'Latest change to the action or any of its executions.';

create or replace view usher.lane_stats as
with waiting as (
  select e.lane_key, count(*) as queue_length, min(e.created_at) as oldest_enqueued_at,
    min(e.run_at) filter (where e.run_at > clock_timestamp()) as next_retry_at
  from usher.executions e
  where e.status = 'requested'
    and e.lane_key is not null
  group by e.lane_key
)
select
  k.lane_key,
  split_part(split_part(k.lane_key, '#', 1), ':', 1) as scope,
  nullif(split_part(split_part(k.lane_key, '#', 1), ':', 2), '') as scope_ref,
  nullif(substr(k.lane_key, strpos(k.lane_key, '#') + 1), k.lane_key)::jsonb as group_key,
  coalesce(w.queue_length, 0) as queue_length,
  coalesce(l.active_count, 0) as active_count,
  p.threshold,
  p.ref as policy_ref,
  w.oldest_enqueued_at,
  l.total_admitted,
  l.paused_until,
  l.pause_reason,
  l.blocked_by,
  l.blocked_reason,
  w.next_retry_at
from (select lane_key from usher.lanes union select lane_key from waiting) k
left join usher.lanes l on l.lane_key = k.lane_key
left join waiting w on w.lane_key = k.lane_key
left join lateral usher.lane_policy(k.lane_key) p on true;

comment on view usher.lane_stats is
  'One row per FIFO lane: its scope, group values, waiting and active counts, and the policy in force.';
comment on column usher.lane_stats.lane_key is 'The lane (see usher.lanes.lane_key).';
comment on column usher.lane_stats.scope is 'action, pack or global.';
comment on column usher.lane_stats.scope_ref is 'The action or pack of the scope; null for global.';
comment on column usher.lane_stats.group_key is 'Values of the policy''s grouping parameters, or null.';
comment on column usher.lane_stats.queue_length is 'Executions waiting in the lane.';
comment on column usher.lane_stats.active_count is 'Slots held.';
comment on column usher.lane_stats.threshold is 'Threshold of the policy now in force; null means no limit.';
comment on column usher.lane_stats.policy_ref is 'The policy now in force for the lane''s scope.';
comment on column usher.lane_stats.oldest_enqueued_at is 'Enqueue time of the oldest waiting execution.';
comment on column usher.lane_stats.total_admitted is 'Executions admitted since the lane row was created.';
comment on column usher.lane_stats.paused_until is 'Nothing is admitted into the lane before this time.';
comment on column usher.lane_stats.pause_reason is 'Why the lane is paused.';
comment on column usher.lane_stats.blocked_by is 'The failed execution that blocks the lane (policy on_failure = block) until it is retried or the lane unblocked.';
comment on column usher.lane_stats.blocked_reason is 'Why the lane is blocked.';
comment on column usher.lane_stats.next_retry_at is 'When the first retry waiting in the lane ends its backoff.';

create or replace function usher.check_invariants()
returns table (lane_key text, problem text, detail text)
language sql
stable
as $$
  -- Slot holders through the claim index (scheduled) and the lease index (running, canceling):
  -- no index lists them by lane, because it would cost every admission and claim an entry.
  with holders as materialized (
    select e.id, e.lane_key, e.queue_position, e.scheduled_at
    from usher.executions e
    where e.status = 'scheduled'
      and e.lane_key is not null
    union all
    select e.id, e.lane_key, e.queue_position, e.scheduled_at
    from usher.executions e
    where e.status in ('running', 'canceling')
      and e.lane_key is not null
  ),
  holding as (
    select h.lane_key, count(*) as holders, max(h.scheduled_at) as last_admitted_at,
      max(h.queue_position) as last_position
    from holders h
    group by h.lane_key
  ),
  compared as (
    select coalesce(l.lane_key, h.lane_key) as lane_key,
      coalesce(l.active_count, 0) as counted,
      coalesce(h.holders, 0) as holders,
      h.last_admitted_at
    from usher.lanes l
    full join holding h on h.lane_key = l.lane_key
  )
  select c.lane_key, 'slot_count_mismatch',
    format('lanes.active_count is %s but %s executions hold a slot', c.counted, c.holders)
  from compared c
  where c.counted <> c.holders
  union all
  -- Over the threshold is only a fault if something was admitted after the threshold was last
  -- changed: lowering it lets the running ones finish.
  select c.lane_key, 'over_threshold',
    format('%s executions hold a slot, threshold is %s (policy %s)', c.holders, p.threshold, p.ref)
  from compared c
  cross join lateral usher.lane_policy(c.lane_key) p
  where p.threshold is not null
    and c.holders > p.threshold
    and c.last_admitted_at >= p.updated_at
  union all
  -- Only an execution waiting ahead of its lane's last holder can be one, so only those are
  -- compared with the lane's holders; each is reported once, with the first newer holder.
  (
    select distinct on (e.id) e.lane_key, 'admitted_past_older_waiting',
      format('execution %s is waiting while newer execution %s of the same lane holds a slot', e.id, n.id)
    from usher.executions e
    join holding h on h.lane_key = e.lane_key and e.queue_position <= h.last_position
    join holders n on n.lane_key = e.lane_key
      and (n.queue_position, n.id) > (e.queue_position, e.id)
      and n.scheduled_at > greatest(e.queued_at, e.run_at)
    where e.status = 'requested'
      and e.lane_key is not null
      and not usher.action_is_paused(e.action_ref)
    order by e.id, n.queue_position, n.id
  )
$$;

comment on function usher.check_invariants() is
  'Returns one row per broken invariant (none when all hold): slot counters equal to the executions holding slots, no lane admitted past its threshold, no execution admitted while one ahead of it in its lane was waiting and due.';

create or replace view usher.execution_statuses (status, holds_slot, terminal, meaning) as
values
  ('delayed', false, false, 'Waiting for its run_at (a delayed start, or the backoff of a retry of an execution without lane) before joining its lane.'),
  ('requested', false, false, 'Waiting in its FIFO lane for a slot (a retry waits here at its old place until its backoff ends).'),
  ('scheduled', true, false, 'Admitted: holds a slot of its lane, waiting for a worker to claim it.'),
  ('running', true, false, 'Claimed by a worker under a lease; its handler is running.'),
  ('canceling', true, false, 'Cancel requested while running; the worker is stopping the handler.'),
  ('completed', false, true, 'The handler returned; result holds its value.'),
  ('failed', false, true, 'The handler threw, or its result could not be stored; error says why.'),
  ('cancelled', false, true, 'Cancelled by request, by policy method cancel, or because its lane''s queue was full; result.reason says which.'),
  ('timeout', false, true, 'Ran past its timeout_seconds.'),
  ('abandoned', false, true, 'Its worker stopped renewing the lease (crashed, hung or cut off); the slot was taken back.');

comment on view usher.execution_statuses is 'Every status an execution can have, and what it means.';
comment on column usher.execution_statuses.status is 'Value of usher.executions.status.';
comment on column usher.execution_statuses.holds_slot is 'Whether an execution in this status counts against its lane''s threshold.';
comment on column usher.execution_statuses.terminal is 'Whether the status is final (completed_at is set).';
comment on column usher.execution_statuses.meaning is 'What the status means.';
