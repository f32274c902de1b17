-- A least-privilege role for producers, and the index retention deletes by.
--
-- Roles are cluster-wide: several databases (and concurrent migrations of them) may try to create
-- it, so creation is idempotent and tolerates a race. A migrating role without CREATEROLE skips it
-- (with a notice) instead of failing the whole migration; sql/095_producer_access.sql grants only
-- when the role exists.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'usher_producer') then
    return;
  end if;
  if not (select rolsuper or rolcreaterole from pg_roles where rolname = current_user) then
    raise notice 'usher: role usher_producer not created (% may not create roles); create it as NOLOGIN and migrate again', current_user;
    return;
  end if;
  create role usher_producer nologin;
  comment on role usher_producer is
    'Usher producers: may insert executions (only the columns a producer sets) and read the statistics views, nothing else. Grant it to a login role.';
exception
  when duplicate_object or unique_violation then
    null; -- created by a concurrent migration of another database
end
$$;

-- Retention deletes ended executions oldest first, in batches.
create index executions_ended_by_completed_at on usher.executions (completed_at, id)
  where completed_at is not null;
