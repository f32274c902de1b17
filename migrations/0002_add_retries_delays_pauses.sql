-- Lifecycle: retries with backoff and their history, delayed starts (run_at), pausing actions,
-- packs and lanes, a lane blocked by a failed head, rate limits, waiting-time limits and idempotency keys.

alter table usher.actions
  add column max_retries integer not null default 0
    constraint actions_max_retries_range check (max_retries between 0 and 1000),
  add column retry_delay_seconds numeric not null default 1
    constraint actions_retry_delay_seconds_positive check (retry_delay_seconds > 0),
  add column retry_backoff_factor numeric not null default 2
    constraint actions_retry_backoff_factor_at_least_one check (retry_backoff_factor >= 1),
  add column retry_max_delay_seconds numeric not null default 300
    constraint actions_retry_max_delay_seconds_positive check (retry_max_delay_seconds > 0),
  add column retry_jitter numeric not null default 0.2
    constraint actions_retry_jitter_fraction check (retry_jitter between 0 and 1),
  add column paused_at timestamptz,
  add column pause_reason text;

comment on column usher.actions.max_retries is 'Retries after a failed, timed out or abandoned attempt (an execution may override it).';
comment on column usher.actions.retry_delay_seconds is 'Backoff before the first retry.';
comment on column usher.actions.retry_backoff_factor is 'Each further retry waits this many times longer.';
comment on column usher.actions.retry_max_delay_seconds is 'Longest backoff between two attempts.';
comment on column usher.actions.retry_jitter is 'Fraction by which each backoff is randomly lengthened or shortened (0.2 = ±20 %).';
comment on column usher.actions.paused_at is 'Set while the action is paused: its executions wait in their lanes, in order, and none is admitted.';
comment on column usher.actions.pause_reason is 'Why the action is paused.';

create table usher.pack_pauses (
  pack_ref text primary key
    constraint pack_pauses_pack_ref_format check (pack_ref ~ '^[a-z][a-z0-9_-]*$'),
  reason text,
  paused_at timestamptz not null default now()
);

comment on table usher.pack_pauses is 'Paused packs: no execution of any action of the pack is admitted while its row exists.';
comment on column usher.pack_pauses.pack_ref is 'The paused pack.';
comment on column usher.pack_pauses.reason is 'Why the pack is paused.';
comment on column usher.pack_pauses.paused_at is 'When it was paused.';

alter table usher.policies
  add column on_failure text not null default 'wait'
    constraint policies_on_failure_known check (on_failure in ('wait', 'block', 'skip'));

comment on column usher.policies.on_failure is
  'What a lane does when an execution fails. wait: a retry keeps its place at the head and the lane waits for it; one that fails for good is recorded and the lane moves on. block: as wait, but one that fails for good blocks the lane until an operator retries it or unblocks the lane. skip: the lane never waits; a retry rejoins at its old place once its backoff is over.';

alter table usher.lanes
  add column recent_admissions timestamptz[] not null default '{}',
  add column rate_limited_until timestamptz,
  add column paused_until timestamptz,
  add column pause_reason text,
  add column blocked_by bigint,
  add column blocked_reason text,
  add column blocked_at timestamptz;

comment on column usher.lanes.recent_admissions is 'Admission times within the rate-limit window of the lane''s policy (a sliding-window log, oldest first); empty without a rate limit.';
comment on column usher.lanes.rate_limited_until is 'Set when admission stopped at the rate limit: when the oldest admission leaves the window and the next may start.';
comment on column usher.lanes.paused_until is 'No admission into this lane before this time (set by a handler hitting an upstream limit, or by an operator).';
comment on column usher.lanes.pause_reason is 'Why the lane is paused.';
comment on column usher.lanes.blocked_by is 'Execution that failed for good at the head of a lane whose policy blocks on failure; nothing is admitted until it is retried or the lane unblocked.';
comment on column usher.lanes.blocked_reason is 'Why the lane is blocked.';
comment on column usher.lanes.blocked_at is 'When the lane was blocked.';

alter table usher.executions
  drop constraint executions_status_known,
  add constraint executions_status_known check (status in (
    'delayed', 'requested', 'scheduled', 'running', 'canceling',
    'completed', 'failed', 'cancelled', 'timeout', 'abandoned')),
  add column queue_position bigint,
  add column queued_at timestamptz,
  add column run_at timestamptz,
  add column max_retries integer
    constraint executions_max_retries_range check (max_retries between 0 and 1000),
  add column idempotency_key text
    constraint executions_idempotency_key_length check (length(idempotency_key) between 1 and 200),
  add column scope_counted boolean not null default false;

comment on column usher.executions.status is
  'delayed: waiting for run_at before joining its lane. requested: waiting in its FIFO lane. scheduled: holds a slot, waiting for a worker. running: claimed by a worker. canceling: cancel requested while running. Terminal: completed, failed, cancelled, timeout, abandoned (lease expired).';
comment on column usher.executions.queue_position is 'Place in its lane: the lane admits the lowest first. The id for most executions; taken when a delayed execution joins its lane; kept by retries.';
comment on column usher.executions.queued_at is 'When it joined its lane (queue_timeout_seconds counts from here).';
comment on column usher.executions.run_at is 'Not admitted before this time: a delayed start given at insert, or the end of a retry''s backoff.';
comment on column usher.executions.max_retries is 'Retries allowed for this execution; defaults to its action''s max_retries.';
comment on column usher.executions.scope_counted is 'Admitted under a running_executions quota: counted in usher.scope_usage.active_count until it ends.';
comment on column usher.executions.idempotency_key is 'Optional key: while an execution of the action with the same key is not terminal, another cannot be inserted.';

update usher.executions set queue_position = id, queued_at = created_at where queue_position is null;

drop index usher.executions_requested_by_lane;
-- Admission reads the head of one lane.
create index executions_requested_by_lane on usher.executions (lane_key, queue_position, id) where status = 'requested';
-- The executor releases delayed executions when their time comes.
create index executions_delayed_by_run_at on usher.executions (run_at) where status = 'delayed';
-- The executor wakes when the first retry's backoff ends.
create index executions_backing_off_by_run_at on usher.executions (run_at) where status = 'requested' and run_at is not null;
create unique index executions_idempotency_key_active on usher.executions (action_ref, idempotency_key)
  where idempotency_key is not null and completed_at is null;

create table usher.execution_attempts (
  execution_id bigint not null,
  attempt integer not null,
  worker_id bigint,
  status text not null
    constraint execution_attempts_status_known check (status in ('failed', 'timeout', 'abandoned', 'cancelled')),
  error text,
  result jsonb,
  started_at timestamptz,
  ended_at timestamptz not null,
  retry_at timestamptz,
  primary key (execution_id, attempt, ended_at)
);

comment on table usher.execution_attempts is
  'Earlier attempts of executions that were retried (automatically or by an operator). The latest attempt is the execution row itself.';
comment on column usher.execution_attempts.execution_id is 'The execution (usher.executions.id).';
comment on column usher.execution_attempts.attempt is 'Its attempt number (usher.executions.attempt at the time).';
comment on column usher.execution_attempts.worker_id is 'Worker that ran the attempt.';
comment on column usher.execution_attempts.status is 'How the attempt ended.';
comment on column usher.execution_attempts.error is 'Its error message.';
comment on column usher.execution_attempts.result is 'Its result, if any.';
comment on column usher.execution_attempts.started_at is 'When the attempt was claimed.';
comment on column usher.execution_attempts.ended_at is 'When it ended.';
comment on column usher.execution_attempts.retry_at is 'When the next attempt could start (end of the backoff); null for an operator retry.';

create table usher.scope_usage (
  scope_key text primary key,
  admitted_total bigint not null default 0,
  active_count integer not null default 0
    constraint scope_usage_active_count_not_negative check (active_count >= 0),
  updated_at timestamptz not null default now()
);

comment on table usher.scope_usage is
  'Counters for quotas, per policy scope ("action:<ref>", "pack:<ref>" or "global", across all its parameter lanes). Kept only for scopes whose policy has quotas.';
comment on column usher.scope_usage.scope_key is 'The scope: a lane key without its group part.';
comment on column usher.scope_usage.admitted_total is 'Executions admitted in the scope since its policy first had a quota (the executions_total budget counts these).';
comment on column usher.scope_usage.active_count is 'Executions of the scope holding a slot that were admitted under a running_executions quota.';
comment on column usher.scope_usage.updated_at is 'Last change.';
