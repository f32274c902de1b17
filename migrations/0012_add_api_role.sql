-- A least-privilege role for the HTTP API (usher api): it may read and change the queue's rows and
-- call its functions, but not change the schema, read other schemas, or erase the audit log.
-- Created like usher_producer (0005): idempotent, tolerating a concurrent migration of another
-- database, and skipped with a notice by a migrating role that may not create roles;
-- sql/096_api_access.sql grants it what it may do on every migrate.
do $$
begin
  if exists (select 1 from pg_roles where rolname = 'usher_api') then
    return;
  end if;
  if not (select rolsuper or rolcreaterole from pg_roles where rolname = current_user) then
    raise notice 'usher: role usher_api not created (% may not create roles); create it as NOLOGIN and migrate again', current_user;
    return;
  end if;
  create role usher_api nologin;
  comment on role usher_api is
    'Usher HTTP API: reads and writes the rows of schema usher and calls its functions; no DDL, no other schema, no deleting the API audit log. Grant it to the login role usher api connects as (with USHER_MIGRATE=check).';
exception
  when duplicate_object or unique_violation then
    null; -- created by a concurrent migration of another database
end
$$;
