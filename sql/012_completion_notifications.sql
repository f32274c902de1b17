-- Completion notifications go out only while someone watches for them.
--
-- Postgres 15 (the version tested here) signals every backend that LISTENs in the database on every
-- committed NOTIFY, whatever its channel: each one wakes, runs a transaction to read the queue,
-- and drops what it does not listen to. Workers and executors listen for their own channels, so a
-- completion notification nobody wants still woke all of them, once per completing transaction:
-- in a threshold-1 lane, where every execution ends in a commit of its own, one worker and one
-- executor made three commits per execution instead of one, and ran 8 % slower. Watchers (the client's waitFor, open API
-- streams, a psql session) hold a shared session-level advisory lock. A completing transaction
-- tries the same lock exclusively: when it gets it, no one watches and it sends nothing. It keeps
-- the lock until it commits, so a watcher arriving meanwhile waits for that commit, and the state
-- it reads after starting to listen already has those executions ended: none is missed.

create or replace function usher.completion_watch_lock_key()
returns bigint
language sql
immutable
as $$
  select 29298::bigint << 32
$$;

comment on function usher.completion_watch_lock_key() is
  'Advisory lock key that sessions watching usher.execution_completed hold shared (classid 29298, objid 0 in pg_locks).';

create or replace function usher.watching_completions()
returns boolean
language sql
stable
as $$
  select exists (
    select 1 from pg_locks l
    where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.mode = 'ShareLock' and l.granted
      and l.database = (select d.oid from pg_database d where d.datname = current_database())
      and l.classid = 29298 and l.objid = 0 and l.objsubid = 1)
$$;

comment on function usher.watching_completions() is
  'True when this session holds the completion watch lock (usher.watch_completions()).';

create or replace function usher.watch_completions()
returns void
language plpgsql
as $$
begin
  -- Once per session, so one unwatch_completions() undoes it.
  if not usher.watching_completions() then
    perform pg_advisory_lock_shared(usher.completion_watch_lock_key());
  end if;
  listen "usher.execution_completed";
end
$$;

comment on function usher.watch_completions() is
  'LISTENs on usher.execution_completed and marks this session as watching, so completions notify it: select usher.watch_completions(); then read the state you wait on. Call it alone, not inside a transaction that changes executions: it waits for completing transactions that decided no one watched to commit.';

create or replace function usher.unwatch_completions()
returns void
language plpgsql
as $$
begin
  unlisten "usher.execution_completed";
  if usher.watching_completions() then
    perform pg_advisory_unlock_shared(usher.completion_watch_lock_key());
  end if;
end
$$;

comment on function usher.unwatch_completions() is
  'Stops listening on usher.execution_completed and watching; ending the session does the same.';

create or replace function usher.notify_completed(p_ids bigint[])
returns void
language plpgsql
as $$
begin
  if coalesce(cardinality(p_ids), 0) = 0 then
    return;
  end if;
  -- Held until commit when taken. Another completing transaction holding it makes this one notify
  -- as well: needless then, never missing. A session's own shared lock does not conflict with its
  -- exclusive one, so a watching session that ends executions itself is checked apart.
  if pg_try_advisory_xact_lock(usher.completion_watch_lock_key())
      and not ('usher.execution_completed' = any (array(select pg_listening_channels()))) then
    return;
  end if;
  perform usher.notify_ids('usher.execution_completed', p_ids);
end
$$;

comment on function usher.notify_completed(bigint[]) is
  'Announces executions that ended on usher.execution_completed, when any session watches (usher.watch_completions()).';
