-- What the least-privilege role usher_producer (created by migration 0005) may do: insert
-- executions, giving only the columns a producer owns, and read the statistics views. Nothing else:
-- it cannot update, delete, read other tables, or call a state transition (they run as the caller).
--
-- The enqueue trigger and the lookups the views make read actions and policies, which producers may
-- not read themselves, so those functions run as their owner, with a fixed search_path.

alter function usher.prepare_execution() security definer set search_path = pg_catalog, pg_temp;
alter function usher.effective_policy(text) security definer set search_path = pg_catalog, pg_temp;
alter function usher.lane_policy(text) security definer set search_path = pg_catalog, pg_temp;
alter function usher.action_is_paused(text) security definer set search_path = pg_catalog, pg_temp;
-- Every enqueue records its execution's first status in the event log's inbox.
alter function usher.record_inserted_executions() security definer set search_path = pg_catalog, pg_temp;

do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'usher_producer') then
    return;
  end if;
  grant usage on schema usher to usher_producer;
  grant insert (action_ref, params, run_at, timeout_seconds, max_retries, idempotency_key, parent_id, enforcement_id)
    on usher.executions to usher_producer;
  -- INSERT ... RETURNING id, status needs these, and ON CONFLICT on the idempotency key its columns.
  grant select (id, status, action_ref, idempotency_key, completed_at) on usher.executions to usher_producer;
  grant select on usher.queue_stats, usher.lane_stats, usher.execution_statuses to usher_producer;
end
$$;
