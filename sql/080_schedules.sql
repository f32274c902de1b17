-- Cron schedules (table in migrations/0003_create_schedules.sql). Postgres cannot parse cron, so
-- the executor computes ticks in TypeScript (src/executor/schedules.ts) and hands them here; these
-- functions make firing them a single guarded transition, safe with any number of executors.

create or replace function usher.prepare_schedule()
returns trigger
language plpgsql
as $$
begin
  if tg_op = 'INSERT' or new.timezone is distinct from old.timezone then
    -- A CHECK constraint cannot look up pg_timezone_names (it is not immutable: the time zone
    -- database changes with the server), so the trigger does it.
    if not exists (select 1 from pg_catalog.pg_timezone_names z where z.name = new.timezone) then
      raise exception 'usher.schedules: schedule %: unknown time zone %', quote_nullable(new.ref), quote_nullable(new.timezone)
        using errcode = 'check_violation', constraint = 'schedules_timezone_known',
          hint = 'Use an IANA time zone name from pg_timezone_names, such as UTC or Europe/Paris.';
    end if;
  end if;

  if tg_op = 'UPDATE' then
    if new.cron is distinct from old.cron or new.timezone is distinct from old.timezone then
      -- A new expression deserves a new verdict; and ticks of the old one say nothing about it.
      new.error := null;
      if new.next_tick_at is not distinct from old.next_tick_at then
        new.next_tick_at := null;
      end if;
    end if;
    if new.enabled and not old.enabled and new.next_tick_at is not distinct from old.next_tick_at then
      -- Re-enabled: start from the next tick after now; the time it was off is not backfilled.
      new.next_tick_at := null;
    end if;
    new.updated_at := now();
  end if;
  return new;
end
$$;

comment on function usher.prepare_schedule() is
  'BEFORE INSERT OR UPDATE on usher.schedules: rejects an unknown time zone, and after a change of cron, timezone or a re-enable clears error and next_tick_at so the executor starts afresh from now.';

create or replace trigger schedules_prepare
  before insert or update on usher.schedules
  for each row execute function usher.prepare_schedule();

create or replace function usher.fire_schedule(
  p_schedule_id bigint,
  p_seen_next_tick_at timestamptz,
  p_cron text,
  p_timezone text,
  p_ticks timestamptz[],
  p_next_tick_at timestamptz
)
returns table (advanced boolean, action_enabled boolean, execution_ids bigint[], ticks timestamptz[])
language plpgsql
as $$
declare
  v_schedule usher.schedules;
  v_action_enabled boolean;
  v_ids bigint[];
  v_ticks timestamptz[];
begin
  if exists (
      select 1 from unnest(p_ticks) t (tick)
      where t.tick is null
        or t.tick > clock_timestamp()
        or t.tick < p_seen_next_tick_at
        or t.tick >= p_next_tick_at) then
    raise exception 'usher.fire_schedule: schedule %: ticks % are not all due, between % and %',
        p_schedule_id, p_ticks, p_seen_next_tick_at, p_next_tick_at
      using errcode = 'invalid_parameter_value';
  end if;

  -- The guard is the state the executor computed from. Two executors that read the same row both
  -- get here; the second waits for the first's row lock, then finds next_tick_at moved and fires
  -- nothing. An edit to cron, timezone or enabled in between also voids the computation.
  update usher.schedules s
  set next_tick_at = p_next_tick_at,
    last_tick_at = coalesce((select max(t.tick) from unnest(p_ticks) t (tick)), s.last_tick_at)
  where s.id = p_schedule_id
    and s.enabled
    and s.error is null
    and s.next_tick_at is not distinct from p_seen_next_tick_at
    and s.cron = p_cron
    and s.timezone = p_timezone
  returning s.* into v_schedule;
  if not found then
    return query select false, null::boolean, '{}'::bigint[], '{}'::timestamptz[];
    return;
  end if;

  -- A disabled action accepts no executions: its ticks pass without firing rather than failing
  -- every pass until someone enables it again.
  select a.enabled into v_action_enabled from usher.actions a where a.ref = v_schedule.action_ref;

  -- The unique index makes a tick that somehow fired already (a hand-edited next_tick_at, say) a
  -- no-op instead of a second execution.
  with inserted as (
    insert into usher.executions (action_ref, params, schedule_id, schedule_tick)
    select v_schedule.action_ref, v_schedule.params, v_schedule.id, t.tick
    from unnest(p_ticks) t (tick)
    where v_action_enabled
    order by t.tick
    on conflict (schedule_id, schedule_tick) where schedule_id is not null do nothing
    returning id, schedule_tick
  )
  select coalesce(array_agg(i.id order by i.schedule_tick), '{}'), coalesce(array_agg(i.schedule_tick order by i.schedule_tick), '{}')
  into v_ids, v_ticks
  from inserted i;

  return query select true, v_action_enabled, v_ids, v_ticks;
end
$$;

comment on function usher.fire_schedule(bigint, timestamptz, text, text, timestamptz[], timestamptz) is
  'Executor: enqueues one execution per due tick of a schedule and moves next_tick_at on, in one transaction, only if the schedule still has the next_tick_at, cron and timezone the ticks were computed from. advanced false: another executor (or an edit) got there first and nothing was enqueued. Ticks of a disabled action advance the schedule without enqueuing.';

create or replace function usher.mark_schedule_invalid(p_schedule_id bigint, p_cron text, p_timezone text, p_error text)
returns boolean
language sql
as $$
  with marked as (
    update usher.schedules s
    set error = p_error,
      next_tick_at = null
    where s.id = p_schedule_id
      and s.cron = p_cron
      and s.timezone = p_timezone
      and s.error is null
    returning s.id
  )
  select exists (select 1 from marked)
$$;

comment on function usher.mark_schedule_invalid(bigint, text, text, text) is
  'Executor: records why a schedule cannot be computed (its cron or timezone as read), so it is skipped until edited. True only for the call that recorded it, so one executor logs it.';
