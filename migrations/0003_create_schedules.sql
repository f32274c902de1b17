-- Recurring executions: cron schedules. A tick becomes an ordinary execution, inserted by whichever
-- executor gets there first; the unique index on (schedule_id, schedule_tick) makes a second insert
-- of the same tick a no-op, so a tick fires once however many executors run.
-- The trigger that validates timezones and resets a schedule on edits lives in sql/080_schedules.sql.

create table usher.schedules (
  id bigint generated always as identity primary key,
  ref text not null
    constraint schedules_ref_unique unique
    constraint schedules_ref_format check (ref ~ '^[a-z0-9][a-z0-9_.-]*$' and length(ref) <= 200),
  description text,
  action_ref text not null references usher.actions (ref) on delete cascade,
  cron text not null
    -- Only the shape is checked here (Postgres has no cron parser); the executor parses the rest
    -- and records what it rejects in error.
    constraint schedules_cron_shape
      check (cron ~ '^\s*(@[a-z]+|\S+(\s+\S+){4,6})\s*$' and length(cron) <= 200),
  timezone text not null default 'UTC',
  params jsonb not null default '{}'
    constraint schedules_params_is_object check (jsonb_typeof(params) = 'object'),
  enabled boolean not null default true,
  max_backfill integer not null default 1
    constraint schedules_max_backfill_range check (max_backfill between 0 and 1000),
  next_tick_at timestamptz,
  last_tick_at timestamptz,
  error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table usher.schedules is
  'Recurring executions: each tick of cron (in timezone) enqueues one execution of action_ref with params. The executors fire due ticks; any number may run, each tick fires once.';
comment on column usher.schedules.id is 'Surrogate key, stored in usher.executions.schedule_id.';
comment on column usher.schedules.ref is 'Unique name of the schedule; log lines and errors name it.';
comment on column usher.schedules.description is 'Why the schedule exists, for people.';
comment on column usher.schedules.action_ref is 'The action each tick enqueues. Deleting the action deletes its schedules.';
comment on column usher.schedules.cron is
  'Cron expression: 5 fields (minute precision), 6 (leading seconds) or 7 (trailing year), or @hourly, @daily, @weekly, @monthly, @yearly. Parsed by the executor (croner); one it rejects is recorded in error and skipped.';
comment on column usher.schedules.timezone is
  'IANA time zone the cron fields are read in (must be in pg_timezone_names); decides the instants of ticks across DST changes.';
comment on column usher.schedules.params is 'Parameters of every execution the schedule enqueues: a JSON object.';
comment on column usher.schedules.enabled is
  'A disabled schedule fires nothing. Enabling it again starts from the next tick after that moment: the time it was off is not backfilled.';
comment on column usher.schedules.max_backfill is
  'After downtime, how many missed ticks before the latest due one still fire. 0: only the latest due tick fires; older missed ticks are skipped (and logged) either way.';
comment on column usher.schedules.next_tick_at is
  'The next tick due, computed by the executor from the cron; null until the first executor pass (a new schedule starts from then, without backfill) and again after cron, timezone or enabled change. An executor fires the schedule once the database clock passes it.';
comment on column usher.schedules.last_tick_at is 'The latest tick that fired (its nominal time, not when it was enqueued).';
comment on column usher.schedules.error is
  'Why the executor cannot compute ticks (invalid cron or timezone, no tick ever again). The schedule is skipped while set; editing cron or timezone clears it.';
comment on column usher.schedules.created_at is 'When the schedule was created.';
comment on column usher.schedules.updated_at is 'Last change to the row, including the executor advancing its ticks.';

-- The executor's pass reads due schedules: enabled, parseable, next tick unknown or past.
create index schedules_due on usher.schedules (next_tick_at nulls first) where enabled and error is null;
create index schedules_by_action_ref on usher.schedules (action_ref);

alter table usher.executions
  add column schedule_id bigint,
  add column schedule_tick timestamptz;

comment on column usher.executions.schedule_id is
  'Provenance: the usher.schedules.id whose tick enqueued it. No foreign key: history outlives a deleted schedule.';
comment on column usher.executions.schedule_tick is
  'The nominal time of the schedule tick that enqueued it; with schedule_id, unique, so a tick enqueues one execution however many executors fire it.';

create unique index executions_schedule_tick_unique
  on usher.executions (schedule_id, schedule_tick)
  where schedule_id is not null;

-- not valid: both columns are new, so every existing row satisfies it; this skips a full scan of
-- the executions table under an exclusive lock. New and updated rows are checked all the same.
alter table usher.executions
  add constraint executions_schedule_tick_iff_schedule_id
    check ((schedule_id is null) = (schedule_tick is null)) not valid;
