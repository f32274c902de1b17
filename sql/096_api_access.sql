-- What the role usher_api (migration 0012) may do, granted again on every migrate so that tables
-- added later are covered: use schema usher, read and write its tables and views, use its
-- sequences, call its functions (EXECUTE is PUBLIC's by default). Not: create or alter anything
-- (it owns nothing and has no CREATE on the schema), touch usher.schema_migrations beyond reading
-- it (readiness), or change or delete rows of usher.api_audit_log beyond answering them.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'usher_api') then
    return;
  end if;
  grant usage on schema usher to usher_api;
  grant select, insert, update, delete on all tables in schema usher to usher_api;
  grant usage, select on all sequences in schema usher to usher_api;
  revoke insert, update, delete on usher.schema_migrations from usher_api;
  revoke update, delete on usher.api_audit_log from usher_api;
  grant update (status, answered_at) on usher.api_audit_log to usher_api;
  -- /metrics reads the snapshot age of other roles' sessions, which pg_stat_activity shows only to
  -- members of pg_read_all_stats. Granting it needs a superuser (or, before Postgres 16, CREATEROLE).
  begin
    grant pg_read_all_stats to usher_api;
  exception
    when insufficient_privilege then
      raise notice 'usher: pg_read_all_stats not granted to usher_api (% may not): usher_oldest_snapshot_seconds will see only its own sessions', current_user;
  end;
end
$$;
