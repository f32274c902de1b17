-- Which policy governs an execution, and which FIFO lane it waits in.

-- PL/pgSQL rather than SQL: these run in every enqueue and admission, and PL/pgSQL keeps their
-- plans for the session where a non-inlinable SQL function is planned again in every transaction.
create or replace function usher.effective_policy(p_action_ref text)
returns usher.policies
language plpgsql
stable
as $$
declare
  v_policy usher.policies;
begin
  select p.* into v_policy
  from usher.policies p
  where p.enabled
    and (p.action_ref = p_action_ref
      or p.pack_ref = split_part(p_action_ref, '.', 1)
      or (p.action_ref is null and p.pack_ref is null))
  order by (p.action_ref is not null) desc,
    (p.pack_ref is not null) desc,
    p.priority desc,
    p.created_at desc,
    p.id desc
  limit 1;
  return v_policy;
end
$$;

comment on function usher.effective_policy(text) is
  'The enabled policy that governs new executions of an action: narrowest scope (action, pack, global), then highest priority, then newest. All columns null when none.';

-- PL/pgSQL, as the policy lookups above: called by every enqueue, where a SQL function with a
-- subquery was planned again in each transaction.
create or replace function usher.lane_key_for(p_policy usher.policies, p_params jsonb)
returns text
language plpgsql
immutable
as $$
declare
  v_scope text;
begin
  if p_policy.id is null then
    return null;
  end if;
  v_scope := case
    when p_policy.action_ref is not null then 'action:' || p_policy.action_ref
    when p_policy.pack_ref is not null then 'pack:' || p_policy.pack_ref
    else 'global'
  end;
  if cardinality(p_policy.parameters) = 0 then
    return v_scope;
  end if;
  return v_scope || '#' || (
    select jsonb_agg(p_params #> string_to_array(t.path, '.') order by t.ord)
    from unnest(p_policy.parameters) with ordinality as t (path, ord)
  )::text;
end
$$;

comment on function usher.lane_key_for(usher.policies, jsonb) is
  'Lane of an execution under a policy: the policy scope, plus the values of its grouping parameters (missing paths count as null).';

-- The lane key names its scope, so a lane keeps following whatever policy governs that scope now:
-- raising, lowering, disabling or replacing a policy applies to executions already waiting.
create or replace function usher.lane_policy(p_lane_key text)
returns usher.policies
language plpgsql
stable
as $$
declare
  v_scope text := split_part(p_lane_key, '#', 1);
  v_policy usher.policies;
begin
  select p.* into v_policy
  from usher.policies p
  where p.enabled
    and case split_part(v_scope, ':', 1)
      when 'action' then p.action_ref = split_part(v_scope, ':', 2)
      when 'pack' then p.pack_ref = split_part(v_scope, ':', 2)
      when 'global' then p.action_ref is null and p.pack_ref is null
      else false
    end
  order by p.priority desc, p.created_at desc, p.id desc
  limit 1;
  return v_policy;
end
$$;

comment on function usher.lane_policy(text) is
  'The enabled policy now in force for a lane''s scope. All columns null when none: the lane then has no slot limit and drains.';

create or replace function usher.notify_ids(p_channel text, p_ids bigint[])
returns void
language plpgsql
as $$
declare
  v_payload text;
begin
  if coalesce(cardinality(p_ids), 0) = 0 then
    return;
  end if;
  v_payload := array_to_string(p_ids, ',');
  -- NOTIFY payloads are capped at 8000 bytes; an empty payload means "several, re-read the table".
  if octet_length(v_payload) > 7900 then
    v_payload := '';
  end if;
  perform pg_notify(p_channel, v_payload);
end
$$;

comment on function usher.notify_ids(text, bigint[]) is
  'One NOTIFY on a channel with comma-separated execution ids (empty when too many to fit). Payloads are hints, never state.';

create or replace function usher.action_is_paused(p_action_ref text)
returns boolean
language plpgsql
stable
as $$
begin
  return exists (select 1 from usher.actions a where a.ref = p_action_ref and a.paused_at is not null)
    or exists (select 1 from usher.pack_pauses p where p.pack_ref = split_part(p_action_ref, '.', 1));
end
$$;

comment on function usher.action_is_paused(text) is 'Whether the action, or its pack, is paused: its executions are not admitted.';

-- PL/pgSQL, not SQL: a SQL function called from PL/pgSQL is planned again in every transaction
-- (a serial lane's step calls this once per commit), where PL/pgSQL keeps its plan for the session.
create or replace function usher.anything_paused()
returns boolean
language plpgsql
stable
as $$
begin
  return exists (select 1 from usher.actions a where a.paused_at is not null)
    or exists (select 1 from usher.pack_pauses);
end
$$;

comment on function usher.anything_paused() is
  'Whether any action or pack is paused. Pauses are rare: while there is none, admission need not check executions one by one.';

create or replace function usher.policy_quota(p_policy usher.policies, p_quota_type text)
returns integer
language plpgsql
immutable
as $$
begin
  if p_policy.quotas is null or p_policy.quotas = '[]'::jsonb then
    return null;
  end if;
  return (select min((q ->> 'limit')::integer)
    from jsonb_array_elements(p_policy.quotas) q
    where q ->> 'quota_type' = p_quota_type);
end
$$;

comment on function usher.policy_quota(usher.policies, text) is 'The limit of one quota type of a policy, or null when it has none.';

create or replace function usher.validate_policy()
returns trigger
language plpgsql
as $$
declare
  v_quota jsonb;
begin
  for v_quota in select q from jsonb_array_elements(new.quotas) q loop
    if jsonb_typeof(v_quota) <> 'object'
      or v_quota ->> 'quota_type' is null
      or v_quota ->> 'quota_type' not in ('running_executions', 'executions_total')
      or jsonb_typeof(v_quota -> 'limit') <> 'number'
      or (v_quota ->> 'limit')::numeric <> floor((v_quota ->> 'limit')::numeric)
      or (v_quota ->> 'limit')::numeric < 0
      or (v_quota ->> 'limit')::numeric > 2147483647 then
      raise exception 'usher.policies: policy % has an invalid quota %: each must be {"quota_type": "running_executions" or "executions_total", "limit": a whole number >= 0}',
        new.ref, v_quota
        using errcode = 'check_violation', constraint = 'policies_quotas_valid';
    end if;
  end loop;
  if (select count(*) <> count(distinct q ->> 'quota_type') from jsonb_array_elements(new.quotas) q) then
    raise exception 'usher.policies: policy % names a quota type twice', new.ref
      using errcode = 'check_violation', constraint = 'policies_quotas_valid';
  end if;
  return new;
end
$$;

comment on function usher.validate_policy() is 'BEFORE INSERT OR UPDATE on usher.policies: checks the quotas list, naming the policy and the bad entry.';

create or replace trigger policies_validate
  before insert or update on usher.policies
  for each row execute function usher.validate_policy();
