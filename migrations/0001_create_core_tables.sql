-- Core tables of Usher: actions, policies, lanes, executions, workers.
-- Functions, triggers and views live in sql/ and are replaced on every migrate.

create schema if not exists usher;

comment on schema usher is
  'Usher job queue: executions of actions, admitted in strict FIFO order per lane into concurrency slots.';

create table usher.actions (
  ref text primary key
    constraint actions_ref_is_pack_dot_name
      check (ref ~ '^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*$' and length(ref) <= 200),
  pack_ref text not null generated always as (split_part(ref, '.', 1)) stored,
  description text,
  enabled boolean not null default true,
  timeout_seconds integer not null default 600
    constraint actions_timeout_seconds_positive check (timeout_seconds > 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table usher.actions is
  'What can be executed. A worker registers the actions it can run when it starts; plain INSERT works too.';
comment on column usher.actions.ref is 'Action reference "pack.name": lowercase letters, digits, _ and -.';
comment on column usher.actions.pack_ref is 'The pack part of ref, derived.';
comment on column usher.actions.enabled is 'A disabled action accepts no new executions; waiting ones stay.';
comment on column usher.actions.timeout_seconds is 'Default run time limit of an execution, from the moment a worker claims it.';
comment on column usher.actions.description is 'What the action does, for people.';
comment on column usher.actions.created_at is 'When the action was registered.';
comment on column usher.actions.updated_at is 'Last change to the row.';

create index actions_by_pack_ref on usher.actions (pack_ref);

create table usher.policies (
  id bigint generated always as identity primary key,
  ref text not null
    constraint policies_ref_unique unique
    constraint policies_ref_format check (ref ~ '^[a-z0-9][a-z0-9_.-]*$' and length(ref) <= 200),
  description text,
  action_ref text references usher.actions (ref) on delete cascade,
  pack_ref text
    constraint policies_pack_ref_format check (pack_ref ~ '^[a-z][a-z0-9_-]*$'),
  enabled boolean not null default true,
  priority integer not null default 0,
  threshold integer
    constraint policies_threshold_not_negative check (threshold >= 0),
  method text not null default 'enqueue'
    constraint policies_method_is_enqueue_or_cancel check (method in ('enqueue', 'cancel')),
  parameters text[] not null default '{}'
    constraint policies_parameters_are_dot_paths
      check (array_position(parameters, null) is null and coalesce(array_length(parameters, 1), 0) <= 8),
  max_queue_length integer not null default 10000
    constraint policies_max_queue_length_not_negative check (max_queue_length >= 0),
  rate_limit_max_executions integer
    constraint policies_rate_limit_max_executions_positive check (rate_limit_max_executions > 0),
  rate_limit_window_seconds integer
    constraint policies_rate_limit_window_seconds_positive check (rate_limit_window_seconds > 0),
  quotas jsonb not null default '[]'
    constraint policies_quotas_is_array check (jsonb_typeof(quotas) = 'array'),
  queue_timeout_seconds integer
    constraint policies_queue_timeout_seconds_positive check (queue_timeout_seconds > 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint policies_scope_is_action_or_pack_or_global check (num_nonnulls(action_ref, pack_ref) <= 1),
  constraint policies_rate_limit_complete check (
    (rate_limit_max_executions is null) = (rate_limit_window_seconds is null))
);

comment on table usher.policies is
  'Admission policies. The enabled policy of the narrowest scope wins for an execution (action, then pack, then global); within a scope the highest priority, then the newest. A pack or global threshold counts across the whole scope.';
comment on column usher.policies.action_ref is 'Scope: this one action. Null with pack_ref null means global.';
comment on column usher.policies.pack_ref is 'Scope: every action of this pack.';
comment on column usher.policies.priority is 'Tie-break between enabled policies of the same scope: highest wins.';
comment on column usher.policies.threshold is 'Max executions of a lane holding a slot (scheduled, running or canceling) at once. Null: no slot limit. Changes apply at once.';
comment on column usher.policies.method is 'enqueue: wait in the FIFO lane for a slot. cancel: cancel at once when no slot is free.';
comment on column usher.policies.parameters is 'Dot-paths into params; each distinct combination of values is its own FIFO lane with its own threshold.';
comment on column usher.policies.max_queue_length is 'Max executions waiting in one lane; beyond it new ones are cancelled with "Queue full".';
comment on column usher.policies.rate_limit_max_executions is 'Rate limit: admissions allowed per lane within any window of rate_limit_window_seconds. Over it, executions wait in order (method cancel: are cancelled).';
comment on column usher.policies.rate_limit_window_seconds is 'Rate limit: length of the sliding window.';
comment on column usher.policies.quotas is 'Quotas over the whole scope (all its lanes): a list of {"quota_type": "running_executions" | "executions_total", "limit": n}. running_executions caps executions holding a slot (over it they wait); executions_total caps admissions ever (over it they are cancelled with QuotaExceeded).';
comment on column usher.policies.queue_timeout_seconds is 'Longest time an execution may wait in its lane before it is cancelled.';
comment on column usher.policies.id is 'Surrogate key.';
comment on column usher.policies.ref is 'Unique name of the policy.';
comment on column usher.policies.description is 'Why the policy exists, for people.';
comment on column usher.policies.enabled is 'Only enabled policies govern executions; a lane whose scope has no enabled policy drains without limit.';
comment on column usher.policies.created_at is 'When the policy was created; the newest wins a priority tie.';
comment on column usher.policies.updated_at is 'Last change; the invariant check uses it to tell a lowered threshold from an over-admission.';

create index policies_by_scope on usher.policies (action_ref, pack_ref) where enabled;

create table usher.lanes (
  lane_key text primary key,
  active_count integer not null default 0
    constraint lanes_active_count_not_negative check (active_count >= 0),
  total_admitted bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table usher.lanes is
  'One FIFO lane per effective policy scope (and per parameter group). The row is the lock that serialises admission and the counter of held slots. Created by admission, removed when idle.';
comment on column usher.lanes.lane_key is '"action:<ref>", "pack:<ref>" or "global", followed by "#<json array of group values>" when the policy groups by parameters.';
comment on column usher.lanes.active_count is 'Slots held: executions of the lane that are scheduled, running or canceling. Changed only in the transaction that changes such an execution.';
comment on column usher.lanes.total_admitted is 'Executions ever admitted into this lane row.';
comment on column usher.lanes.created_at is 'When admission first needed this lane row.';
comment on column usher.lanes.updated_at is 'Last admission or release; idle lanes are removed some time after it.';

create table usher.workers (
  id bigint generated always as identity primary key,
  name text not null,
  host text not null,
  pid integer not null,
  actions text[] not null default '{}',
  concurrency integer not null,
  status text not null default 'active'
    constraint workers_status_known check (status in ('active', 'stopped', 'lost')),
  started_at timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  stopped_at timestamptz
);

comment on table usher.workers is 'Worker processes: one row per process start. Heartbeats come from the database clock.';
comment on column usher.workers.status is 'active: heartbeating. stopped: shut down gracefully. lost: heartbeat expired (crashed or cut off).';
comment on column usher.workers.heartbeat_at is 'Last heartbeat, database time.';
comment on column usher.workers.id is 'Worker id, stored in usher.executions.worker_id by claims.';
comment on column usher.workers.name is 'Name given with --name, or host:pid.';
comment on column usher.workers.host is 'Host name of the worker process.';
comment on column usher.workers.pid is 'Process id on that host.';
comment on column usher.workers.actions is 'Actions this worker can run.';
comment on column usher.workers.concurrency is 'Executions it runs at once.';
comment on column usher.workers.started_at is 'When the process registered.';
comment on column usher.workers.stopped_at is 'When it stopped (stopped) or was found silent (lost).';

create index workers_active_by_heartbeat on usher.workers (heartbeat_at) where status = 'active';

create table usher.executions (
  id bigint generated always as identity primary key,
  action_ref text not null,
  params jsonb not null default '{}'
    constraint executions_params_is_object check (jsonb_typeof(params) = 'object'),
  status text not null default 'requested'
    constraint executions_status_known check (status in (
      'requested', 'scheduled', 'running', 'canceling',
      'completed', 'failed', 'cancelled', 'timeout', 'abandoned')),
  lane_key text,
  result jsonb,
  error text,
  timeout_seconds integer
    constraint executions_timeout_seconds_positive check (timeout_seconds > 0),
  attempt integer not null default 0,
  worker_id bigint,
  lease_token uuid,
  lease_expires_at timestamptz,
  enforcement_id bigint,
  parent_id bigint,
  created_at timestamptz not null default clock_timestamp(),
  scheduled_at timestamptz,
  started_at timestamptz,
  completed_at timestamptz,
  updated_at timestamptz not null default clock_timestamp(),
  constraint executions_completed_at_iff_terminal check (
    (completed_at is not null) = (status in ('completed', 'failed', 'cancelled', 'timeout', 'abandoned'))),
  constraint executions_lease_iff_running check (
    (lease_token is not null) = (status in ('running', 'canceling')))
);

comment on table usher.executions is
  'One row per execution of an action. Insert a row to enqueue; Usher moves it through its states.';
comment on column usher.executions.action_ref is 'The action to run ("pack.name"); must exist and be enabled at insert.';
comment on column usher.executions.params is 'Parameters handed to the handler: a JSON object.';
comment on column usher.executions.status is
  'requested: waiting in its FIFO lane. scheduled: holds a slot, waiting for a worker. running: claimed by a worker. canceling: cancel requested while running. Terminal: completed, failed, cancelled, timeout, abandoned (lease expired).';
comment on column usher.executions.lane_key is 'The FIFO lane it waits in and takes a slot of, fixed at insert. Null: no concurrency policy, admitted on insert.';
comment on column usher.executions.result is 'Handler return value, or why it was cancelled.';
comment on column usher.executions.error is 'Error message of a failed, timed out or abandoned execution.';
comment on column usher.executions.timeout_seconds is 'Run time limit, from the claim. Defaults to the action''s timeout_seconds.';
comment on column usher.executions.attempt is 'Number of times a worker has claimed it.';
comment on column usher.executions.worker_id is 'usher.workers.id of the worker that claimed it last.';
comment on column usher.executions.lease_token is 'Fencing token of the current claim. Every mark by a worker must present it.';
comment on column usher.executions.lease_expires_at is 'Database time after which the claim is void and the execution is abandoned; renewed by heartbeats.';
comment on column usher.executions.enforcement_id is 'Optional provenance: the rule enforcement that caused it.';
comment on column usher.executions.parent_id is 'Optional provenance: the execution that caused it.';
comment on column usher.executions.created_at is 'When it was enqueued.';
comment on column usher.executions.scheduled_at is 'When it took a slot (admission), clock time.';
comment on column usher.executions.started_at is 'When a worker claimed it, clock time.';
comment on column usher.executions.completed_at is 'When it reached any terminal state.';
comment on column usher.executions.id is 'Execution id, in enqueue order: the FIFO order of its lane.';
comment on column usher.executions.updated_at is 'Last change to the row.';

-- Admission reads the oldest waiting executions of one lane.
create index executions_requested_by_lane on usher.executions (lane_key, id) where status = 'requested';
-- Workers claim admitted executions oldest first.
create index executions_scheduled_by_id on usher.executions (id) where status = 'scheduled';
-- Sweeps find expired leases; stats count slot holders.
create index executions_active_by_lease on usher.executions (lease_expires_at) where status in ('running', 'canceling');
-- Slot holders per lane, for the invariant check and lane stats.
create index executions_active_by_lane on usher.executions (lane_key, id) where status in ('scheduled', 'running', 'canceling');
create index executions_by_action_status on usher.executions (action_ref, status);

alter table usher.executions set (
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 200,
  autovacuum_analyze_scale_factor = 0.02,
  fillfactor = 85
);
alter table usher.lanes set (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 100,
  fillfactor = 50
);
