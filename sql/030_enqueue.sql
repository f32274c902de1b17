create or replace function usher.action_lock_key(p_action_ref text)
returns bigint
language sql
immutable
as $$
  select (29299::bigint << 32) | (hashtext(p_action_ref)::bigint & 4294967295)
$$;

comment on function usher.action_lock_key(text) is
  'Advisory lock key of an action: every enqueue holds it shared until its transaction ends, and deleting the action takes it exclusively, so a delete waits for executions still being inserted.';

-- Enqueue is a plain INSERT into usher.executions. These triggers validate the row, place it in
-- its lane and wake the executor once per statement, without touching any shared row, so
-- concurrent producers never wait on each other and a rolled-back insert leaves nothing.

create or replace function usher.prepare_execution()
returns trigger
language plpgsql
as $$
declare
  v_action usher.actions;
  v_policy usher.policies;
begin
  if new.status is distinct from 'requested' then
    raise exception 'usher.executions: status is set by Usher; insert without it (got %)', quote_nullable(new.status)
      using errcode = 'check_violation', constraint = 'executions_insert_status_is_requested',
        hint = 'Omit the status column: new executions start as requested.';
  end if;
  if num_nonnulls(new.lane_key, new.result, new.error, new.worker_id, new.lease_token, new.lease_expires_at,
      new.scheduled_at, new.started_at, new.completed_at, new.queue_position, new.queued_at) > 0
    or new.attempt <> 0 then
    raise exception 'usher.executions: lane_key, queue_position, queued_at, result, error, worker_id, lease_token, lease_expires_at, scheduled_at, started_at, completed_at and attempt are set by Usher; insert without them'
      using errcode = 'check_violation', constraint = 'executions_insert_managed_columns_unset';
  end if;
  if new.params is not null and jsonb_typeof(new.params) <> 'object' then
    raise exception 'usher.executions: params must be a JSON object, got a JSON %', jsonb_typeof(new.params)
      using errcode = 'check_violation', constraint = 'executions_params_is_object';
  end if;
  -- Params travel to a worker and sit in the hot table: a producer cannot hand over megabytes.
  if pg_column_size(new.params) > 1048576 then
    raise exception 'usher.executions: params are % bytes, over the limit of 1 MiB', pg_column_size(new.params)
      using errcode = 'program_limit_exceeded', constraint = 'executions_params_size',
        hint = 'Store large inputs elsewhere and pass a reference in params.';
  end if;

  -- Shared with every other enqueue (no waiting on each other); a delete of the action waits for
  -- this transaction, so it cannot miss the execution it is inserting.
  perform pg_advisory_xact_lock_shared(usher.action_lock_key(new.action_ref));
  select * into v_action from usher.actions a where a.ref = new.action_ref;
  if not found then
    raise exception 'usher.executions: unknown action %', quote_nullable(new.action_ref)
      using errcode = 'foreign_key_violation', constraint = 'executions_action_ref_exists',
        hint = 'Register the action (start a worker that has its handler, or INSERT INTO usher.actions).';
  end if;
  if not v_action.enabled then
    raise exception 'usher.executions: action % is disabled', new.action_ref
      using errcode = 'object_not_in_prerequisite_state', constraint = 'executions_action_ref_enabled';
  end if;

  new.timeout_seconds := coalesce(new.timeout_seconds, v_action.timeout_seconds);
  new.max_retries := coalesce(new.max_retries, v_action.max_retries);
  v_policy := usher.effective_policy(new.action_ref);
  new.lane_key := usher.lane_key_for(v_policy, new.params);
  new.created_at := clock_timestamp();
  new.updated_at := new.created_at;
  if new.run_at > new.created_at then
    -- Joins its lane (and takes its place in it) only when run_at comes.
    new.status := 'delayed';
    return new;
  end if;
  new.run_at := null;
  new.queue_position := new.id;
  new.queued_at := new.created_at;
  if new.lane_key is null then
    if usher.action_is_paused(new.action_ref) then
      -- No policy, but paused: wait in the action's own lane (it has no limit) until resumed.
      new.lane_key := 'action:' || new.action_ref;
    else
      -- No policy governs this action: no slot to wait for, so it is admitted at once.
      new.status := 'scheduled';
      new.scheduled_at := new.created_at;
    end if;
  end if;
  return new;
end
$$;

comment on function usher.prepare_execution() is
  'BEFORE INSERT on usher.executions: validates the row, fills defaults and picks its lane.';

create or replace trigger executions_prepare
  before insert on usher.executions
  for each row execute function usher.prepare_execution();

create or replace function usher.announce_inserted_executions()
returns trigger
language plpgsql
as $$
declare
  v_wakeup text := current_setting('usher.enqueue_wakeup', true);
begin
  -- A producer may turn the wake-up off. A transaction that notified holds a cluster-wide lock from
  -- before its commit until the commit is flushed, so concurrent producers of single rows commit
  -- one at a time; without the wake-up, the executor and the workers find the rows on their poll.
  if v_wakeup = 'off' then
    return null;
  elsif v_wakeup is not null and v_wakeup not in ('', 'on') then
    raise exception 'usher.enqueue_wakeup must be on or off, got %', quote_literal(v_wakeup)
      using errcode = 'invalid_parameter_value';
  end if;
  -- Identical notifications within a transaction are folded into one by Postgres.
  if exists (select 1 from inserted where status in ('requested', 'delayed')) then
    perform pg_notify('usher.execution_requested', '');
  end if;
  if exists (select 1 from inserted where status = 'scheduled') then
    perform pg_notify('usher.execution_scheduled', '');
  end if;
  return null;
end
$$;

comment on function usher.announce_inserted_executions() is
  'AFTER INSERT (per statement) on usher.executions: wakes the executor (waiting or delayed executions), or the workers (executions admitted on insert), unless the setting usher.enqueue_wakeup is off.';

create or replace trigger executions_announce_inserted
  after insert on usher.executions
  referencing new table as inserted
  for each statement execute function usher.announce_inserted_executions();

create or replace function usher.touch_updated_at()
returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

comment on function usher.touch_updated_at() is 'BEFORE UPDATE on actions and policies: keeps updated_at current.';

create or replace trigger actions_touch_updated_at
  before update on usher.actions
  for each row execute function usher.touch_updated_at();

create or replace trigger policies_touch_updated_at
  before update on usher.policies
  for each row execute function usher.touch_updated_at();

create or replace function usher.announce_policy_change()
returns trigger
language plpgsql
as $$
begin
  perform pg_notify('usher.policy_changed', '');
  return null;
end
$$;

comment on function usher.announce_policy_change() is
  'Wakes the executor when policies change, so a raised threshold admits waiting executions at once.';

create or replace trigger policies_announce_change
  after insert or update or delete on usher.policies
  for each statement execute function usher.announce_policy_change();
