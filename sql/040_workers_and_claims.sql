-- Workers: registration, heartbeats with lease renewal, and claiming admitted executions.
-- All lease arithmetic uses the database clock.

create or replace function usher.register_worker(
  p_name text,
  p_host text,
  p_pid integer,
  p_actions jsonb,
  p_concurrency integer
)
returns bigint
language plpgsql
as $$
declare
  v_worker_id bigint;
begin
  -- Existing actions keep what operators set on them; only new ones take the handler's defaults.
  insert into usher.actions (ref, description, timeout_seconds)
  select a.ref, a.description, coalesce(a.timeout_seconds, 600)
  from jsonb_to_recordset(p_actions) as a (ref text, description text, timeout_seconds integer)
  on conflict (ref) do nothing;

  insert into usher.workers (name, host, pid, actions, concurrency)
  select p_name, p_host, p_pid, array(select a ->> 'ref' from jsonb_array_elements(p_actions) a), p_concurrency
  returning id into v_worker_id;
  return v_worker_id;
end
$$;

comment on function usher.register_worker(text, text, integer, jsonb, integer) is
  'Registers a worker process and the actions it runs ([{ref, description, timeout_seconds}]); returns its id.';

create or replace function usher.heartbeat_worker(
  p_worker_id bigint,
  p_execution_ids bigint[],
  p_lease_tokens uuid[],
  p_lease_seconds integer
)
returns table (execution_id bigint, lease_token uuid, status text, lease_expires_at timestamptz)
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
as $$
declare
  v_ids bigint[];
  v_tokens uuid[];
  v_statuses text[];
  v_expiries timestamptz[];
begin
  update usher.workers w
  set heartbeat_at = now(),
    status = 'active'
  where w.id = p_worker_id;

  -- A lease token is set exactly while running or canceling (executions_lease_iff_running); a
  -- status condition here would let a generic plan walk every running execution.
  --
  -- A row locked right now is being ended by a mark of this worker (a batch of completions locks
  -- its rows in its own order, a heartbeat in another: waiting for each other's rows deadlocked)
  -- or by a sweep or a cancel. It is left alone and returned with a null lease_expires_at (not renewed) when
  -- its token still matches: the next heartbeat renews it if it is still running, or finds it gone.
  -- The rows locked are updated by their ctid (they cannot move while locked): one probe of the
  -- primary key per lease, as a plain update.
  with locked as (
    select x.ctid
    from usher.executions x
    join unnest(p_execution_ids, p_lease_tokens) as h (id, lease_token)
      on x.id = h.id and x.lease_token = h.lease_token
    for no key update of x skip locked
  ),
  renewed as (
    update usher.executions e
    set lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
    where e.ctid = any (array(select l.ctid from locked l))
    returning e.id, e.lease_token, e.status, e.lease_expires_at
  )
  select array_agg(r.id), array_agg(r.lease_token), array_agg(r.status), array_agg(r.lease_expires_at)
  into v_ids, v_tokens, v_statuses, v_expiries
  from renewed r;
  return query select * from unnest(v_ids, v_tokens, v_statuses, v_expiries);
  -- Only when some lease was not renewed (lost, or its row locked) are the rest read again.
  if coalesce(cardinality(v_ids), 0) < coalesce(cardinality(p_execution_ids), 0) then
    return query
    select e.id, e.lease_token, e.status, null::timestamptz
    from usher.executions e
    join unnest(p_execution_ids, p_lease_tokens) as h (id, lease_token)
      on e.id = h.id and e.lease_token = h.lease_token
    where e.id <> all (coalesce(v_ids, '{}'));
  end if;
end
$$;

comment on function usher.heartbeat_worker(bigint, bigint[], uuid[], integer) is
  'Marks a worker alive and renews the leases it still holds. Returns those leases with their status; a lease missing from the answer is lost, and canceling means abort the handler. A lease whose row another transaction holds locked at that instant (its own mark, a sweep) is not waited for: it is returned with a null lease_expires_at, not renewed.';

create or replace function usher.stop_worker(p_worker_id bigint)
returns void
language sql
as $$
  update usher.workers
  set status = 'stopped',
    stopped_at = now(),
    heartbeat_at = now()
  where id = p_worker_id
$$;

comment on function usher.stop_worker(bigint) is 'Marks a worker as shut down gracefully.';

create or replace function usher.mark_lost_workers(p_silent_seconds integer)
returns integer
language sql
as $$
  with lost as (
    update usher.workers
    set status = 'lost',
      stopped_at = now()
    where status = 'active'
      and heartbeat_at < now() - make_interval(secs => p_silent_seconds)
    returning id
  )
  select count(*)::integer from lost
$$;

comment on function usher.mark_lost_workers(integer) is
  'Marks workers whose heartbeat is older than the given seconds as lost. Their executions come back through lease expiry.';

create or replace function usher.claim_scheduled(
  p_worker_id bigint,
  p_action_refs text[],
  p_limit integer,
  p_lease_seconds integer
)
returns table (
  id bigint,
  action_ref text,
  params jsonb,
  attempt integer,
  lease_token uuid,
  timeout_seconds integer,
  lease_expires_at timestamptz
)
language plpgsql
set plan_cache_mode = force_generic_plan
set jit = off
set enable_seqscan = off
set random_page_cost = 1.1
as $$
#variable_conflict use_column
begin
  -- One index range per action (executions_scheduled_by_action, already in id order), then the
  -- oldest across them: = any() over the index would read and sort every scheduled row instead.
  -- Rows locked here beyond the limit are released at commit, a moment later. PL/pgSQL keeps the
  -- plan for the session; as a SQL function it was planned again in every transaction. The rows
  -- picked are fetched by primary key (a join could hash a scan of the whole table). With
  -- statistics, the default random_page_cost made walking the primary key in id order (filtering
  -- out every finished row before the first scheduled one) look cheaper than the partial index;
  -- 1.1, the usual setting for data in memory or on SSD, keeps the range on the index.
  --
  -- Each range starts at the action's oldest scheduled execution, found by a plain read of the
  -- same index. Every claim leaves its rows' entries in the index until vacuum. On pages a vacuum
  -- had marked all-visible (a backlog that waited through one), the locking walk marked none of
  -- the entries it passed as dead (0 of 20,000 after a drain, counted with pageinspect), so every
  -- claim visited the table for each execution claimed since: a drain of a vacuumed backlog took
  -- time in the square of its length. The plain read marks them, and every later read, the
  -- locking walk included, steps over them inside the index without visiting the table. Both read
  -- one snapshot, so no row the walk could lock lies before that start. A row comparison, because
  -- with `e.id >= …` the generic plan walked the primary key instead of this index.
  return query
  with picked as (
    select p.id
    from (select distinct unnest(p_action_refs) as ref) a
    cross join lateral (
      select e.id
      from usher.executions e
      where e.status = 'scheduled'
        and e.action_ref = a.ref
        and (e.action_ref, e.id) >= (
          select h.action_ref, h.id from usher.executions h
          where h.status = 'scheduled' and h.action_ref = a.ref
          order by h.action_ref, h.id
          limit 1)
      order by e.id
      limit p_limit
      for update skip locked
    ) p
    order by p.id
    limit p_limit
  ),
  claimed as (
    update usher.executions e
    set status = 'running',
      worker_id = p_worker_id,
      attempt = e.attempt + 1,
      lease_token = gen_random_uuid(),
      lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds),
      started_at = clock_timestamp(),
      updated_at = clock_timestamp()
    where e.id = any (array(select picked.id from picked))
    returning e.id, e.action_ref, e.params, e.attempt, e.lease_token, e.timeout_seconds, e.lease_expires_at,
      e.started_at, e.scheduled_at
  ),
  -- The event stream's record of each claim (the row trigger leaves claims to this statement).
  recorded as (
    insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt, elapsed_seconds)
    select c.id, c.action_ref, 'running', 'scheduled', c.attempt, extract(epoch from c.started_at - c.scheduled_at)
    from claimed c
    order by c.id
  )
  select c.id, c.action_ref, c.params, c.attempt, c.lease_token, c.timeout_seconds, c.lease_expires_at
  from claimed c
  order by c.id;
end
$$;

comment on function usher.claim_scheduled(bigint, text[], integer, integer) is
  'Claims up to p_limit admitted executions of the given actions, oldest first, each with a fresh lease token. Slots were taken at admission, so claims never touch lane rows.';
