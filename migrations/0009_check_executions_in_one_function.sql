-- Postgres reads every CHECK constraint of a table back from its stored form, and prepares it
-- again, for each statement that writes to the table. usher.executions had eight (about 8 KB of
-- stored expression trees), and a step of a serial lane writes it in three one-row statements
-- (completion, admission, claim): a third of the step's time went to them. The same rules now
-- live in one function behind one constraint. PL/pgSQL keeps the function compiled for the
-- session, so a statement prepares one short call; a loop of complete_and_claim on a threshold-1
-- lane ran 1.46x as many steps a second, in six runs alternating with the eight constraints (every
-- row is still checked by every rule).
--
-- The function lives here rather than in sql/: changing what a check accepts needs a migration
-- (rows already stored are not checked again when a function is replaced). A broken rule raises
-- the same error as before: SQLSTATE 23514 naming the rule's old constraint name, which API error
-- mapping and users' code may match on.

create function usher.check_execution_row(
  p_status text,
  p_completed_at timestamptz,
  p_lease_token uuid,
  p_params jsonb,
  p_timeout_seconds integer,
  p_max_retries integer,
  p_idempotency_key text,
  p_schedule_id bigint,
  p_schedule_tick timestamptz
)
returns boolean
language plpgsql
immutable
as $$
declare
  v_rule text;
begin
  -- As with CHECK, a rule whose test is null (a null column) holds.
  if not p_status in ('delayed', 'requested', 'scheduled', 'running', 'canceling',
      'completed', 'failed', 'cancelled', 'timeout', 'abandoned') then
    v_rule := 'executions_status_known';
  elsif (p_completed_at is not null) <> (p_status in ('completed', 'failed', 'cancelled', 'timeout', 'abandoned')) then
    v_rule := 'executions_completed_at_iff_terminal';
  elsif (p_lease_token is not null) <> (p_status in ('running', 'canceling')) then
    v_rule := 'executions_lease_iff_running';
  elsif jsonb_typeof(p_params) <> 'object' then
    v_rule := 'executions_params_is_object';
  elsif p_timeout_seconds <= 0 then
    v_rule := 'executions_timeout_seconds_positive';
  elsif not p_max_retries between 0 and 1000 then
    v_rule := 'executions_max_retries_range';
  elsif not length(p_idempotency_key) between 1 and 200 then
    v_rule := 'executions_idempotency_key_length';
  elsif (p_schedule_id is null) <> (p_schedule_tick is null) then
    v_rule := 'executions_schedule_tick_iff_schedule_id';
  end if;
  if v_rule is not null then
    raise exception 'new row for relation "executions" violates check constraint "%"', v_rule
      using errcode = 'check_violation', constraint = v_rule, schema = 'usher', table = 'executions';
  end if;
  return true;
end
$$;

comment on function usher.check_execution_row(text, timestamptz, uuid, jsonb, integer, integer, text, bigint, timestamptz) is
  'The rules every execution row keeps (constraint executions_row_rules): a known status; completed_at set exactly in a terminal status; a lease token exactly while running or canceling; params a JSON object; timeout_seconds > 0; max_retries 0..1000; an idempotency key of 1..200 characters; schedule_id and schedule_tick set together. Raises check_violation naming the rule broken.';

-- not valid: every stored row was checked by the constraints these rules replace, so this skips a
-- full scan of the executions table under an exclusive lock. New and updated rows are checked.
alter table usher.executions
  drop constraint executions_status_known,
  drop constraint executions_completed_at_iff_terminal,
  drop constraint executions_lease_iff_running,
  drop constraint executions_params_is_object,
  drop constraint executions_timeout_seconds_positive,
  drop constraint executions_max_retries_range,
  drop constraint executions_idempotency_key_length,
  drop constraint executions_schedule_tick_iff_schedule_id,
  add constraint executions_row_rules check (usher.check_execution_row(
    status, completed_at, lease_token, params, timeout_seconds, max_retries, idempotency_key,
    schedule_id, schedule_tick)) not valid;

comment on constraint executions_row_rules on usher.executions is
  'The rules of usher.check_execution_row, one call per row written; a broken rule is reported under its own name.';
