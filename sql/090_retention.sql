-- Retention: ended executions (and their earlier attempts) are deleted some time after they end,
-- in small batches, so the hot table stays small and vacuumable.

create or replace function usher.delete_finished_executions(p_older_than interval, p_batch_size integer default 1000)
returns integer
language plpgsql
as $$
declare
  v_ids bigint[];
begin
  if p_older_than is null or p_older_than < interval '0' or p_batch_size is null or p_batch_size < 1 then
    raise exception 'usher.delete_finished_executions: older_than must be >= 0 and batch_size >= 1 (got %, %)',
      p_older_than, p_batch_size
      using errcode = 'invalid_parameter_value';
  end if;
  -- Rows being retried by an operator right now are locked: skip them rather than wait. The head
  -- that blocks a lane stays, so that it can still be retried.
  select array_agg(old.id) into v_ids
  from (
    select e.id
    from usher.executions e
    where e.completed_at < now() - p_older_than
      and e.id <> all (array(select l.blocked_by from usher.lanes l where l.blocked_by is not null))
    order by e.completed_at, e.id
    limit p_batch_size
    for update skip locked
  ) old;
  if v_ids is null then
    return 0;
  end if;
  delete from usher.execution_attempts a where a.execution_id = any (v_ids);
  delete from usher.executions e where e.id = any (v_ids) and e.completed_at is not null;
  return cardinality(v_ids);
end
$$;

comment on function usher.delete_finished_executions(interval, integer) is
  'Retention: deletes up to p_batch_size executions that ended more than p_older_than ago (oldest first), with their earlier attempts; returns how many. Never touches an execution that has not ended or that blocks its lane. The executor calls it in batches (USHER_RETENTION_DAYS).';

create or replace function usher.delete_departed_workers(p_older_than interval)
returns integer
language sql
as $$
  -- A worker row is written at every process start: without this the table grows forever.
  -- Executions keep the id in worker_id as history; only rows of workers that stopped or were
  -- lost that long ago go.
  with gone as (
    delete from usher.workers w
    where w.status in ('stopped', 'lost')
      and w.stopped_at < now() - p_older_than
    returning 1
  )
  select count(*)::integer from gone
$$;

comment on function usher.delete_departed_workers(interval) is
  'Retention: deletes rows of workers that stopped or were lost more than p_older_than ago; returns how many. The executor runs it with each retention pass.';

create or replace function usher.delete_old_audit_rows(p_older_than interval, p_batch_size integer default 1000)
returns integer
language plpgsql
as $$
declare
  v_deleted integer;
begin
  if p_older_than is null or p_older_than < interval '0' or p_batch_size is null or p_batch_size < 1 then
    raise exception 'usher.delete_old_audit_rows: older_than must be >= 0 and batch_size >= 1 (got %, %)',
      p_older_than, p_batch_size
      using errcode = 'invalid_parameter_value';
  end if;
  -- Rows are written in requested_at order, so the oldest ids are the oldest requests.
  delete from usher.api_audit_log a
  where a.id in (
    select o.id from usher.api_audit_log o
    where o.requested_at < now() - p_older_than
    order by o.id
    limit p_batch_size);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end
$$;

comment on function usher.delete_old_audit_rows(interval, integer) is
  'Retention of usher.api_audit_log: deletes up to p_batch_size rows of admin requests made more than p_older_than ago (oldest first); returns how many. The executor calls it with USHER_AUDIT_RETENTION_DAYS (default 0: kept).';
