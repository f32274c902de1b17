/**
 * /policies, /actions/{ref}/policies and /packs/{ref}/policies. A policy is written and shown in the
 * shape of the request body; each leaf maps to one column of usher.policies:
 * scope.type/pack_ref/action_ref -> pack_ref, action_ref; concurrency.limit -> threshold;
 * concurrency.method -> method; concurrency.parameters -> parameters; rate_limit.max_executions ->
 * rate_limit_max_executions; rate_limit.window_seconds -> rate_limit_window_seconds; the rest by name.
 */
import { findAction } from '../../queue/actions.ts';
import {
  deletePolicy, findPolicy, listPolicies, listPoliciesOfAction, listPoliciesOfPack, writePolicy,
  type PolicyColumns, type PolicyRecord,
} from '../../queue/policies.ts';
import type { Caller } from '../auth.ts';
import { ApiError } from '../errors.ts';
import { list, one as oneOf, policySchema } from '../resources.ts';
import { defineRoute, one, page, type ApiDeps, type NamedScope } from '../route.ts';
import { actionScope, packInScope, packOf, packScope } from '../scope.ts';
import {
  packParams, pageOnlyQuery, policyCreateBody, policyListQuery, policyParams, policyPutBody, refParams, type PolicyBody,
} from '../schemas.ts';

/** The request body as columns; a field left out takes the column's default (a whole replacement on PUT). */
function toColumns(body: Omit<PolicyBody, 'ref'>): PolicyColumns {
  return {
    description: body.description ?? null,
    action_ref: body.scope.type === 'action' ? body.scope.action_ref : null,
    pack_ref: body.scope.type === 'pack' ? body.scope.pack_ref : null,
    enabled: body.enabled,
    priority: body.priority,
    threshold: body.concurrency?.limit ?? null,
    method: body.concurrency?.method,
    parameters: body.concurrency?.parameters,
    max_queue_length: body.max_queue_length,
    rate_limit_max_executions: body.rate_limit?.max_executions ?? null,
    rate_limit_window_seconds: body.rate_limit?.window_seconds ?? null,
    quotas: body.quotas,
    queue_timeout_seconds: body.queue_timeout_seconds ?? null,
    on_failure: body.on_failure,
  };
}

/** A row as the API shows it: the shape of the request body, plus id and timestamps. */
export function toPolicyJson(row: PolicyRecord) {
  const scope = row.action_ref !== null ? { type: 'action', action_ref: row.action_ref }
    : row.pack_ref !== null ? { type: 'pack', pack_ref: row.pack_ref } : { type: 'global' };
  return {
    id: row.id,
    ref: row.ref,
    description: row.description,
    enabled: row.enabled,
    priority: row.priority,
    scope,
    concurrency: { limit: row.threshold, method: row.method, parameters: row.parameters },
    rate_limit: row.rate_limit_max_executions === null || row.rate_limit_window_seconds === null
      ? null
      : { max_executions: row.rate_limit_max_executions, window_seconds: row.rate_limit_window_seconds },
    quotas: row.quotas,
    on_failure: row.on_failure,
    max_queue_length: row.max_queue_length,
    queue_timeout_seconds: row.queue_timeout_seconds,
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

async function write(deps: ApiDeps, ref: string, body: Omit<PolicyBody, 'ref'>, replace: boolean) {
  const outcome = await writePolicy(deps.pool, ref, toColumns(body), replace);
  if (outcome.outcome === 'exists') throw new ApiError('policy_exists', `a policy named ${ref} exists; PUT /policies/${ref} replaces it`);
  if (outcome.outcome === 'unknown_action') {
    throw new ApiError('unknown_action', `unknown action ${body.scope.type === 'action' ? body.scope.action_ref : ''}`.trim());
  }
  return outcome;
}

const policyNotFound = (ref: string) => new ApiError('policy_not_found', `no policy named ${ref}`);

/** The pack a policy governs: its action's, its own, or none (global). */
function policyScope(ref: string, target: { action_ref?: string | null; pack_ref?: string | null }): NamedScope {
  const pack = target.action_ref ? packOf(target.action_ref) : target.pack_ref ?? null;
  return { pack, what: `policy ${ref} (scope ${target.action_ref ?? target.pack_ref ?? 'global'})` };
}

/** The policy, if it exists and governs one of the caller's packs: one outside them is not found either. */
async function existingPolicy(deps: ApiDeps, ref: string, caller: Caller | undefined) {
  const policy = await findPolicy(deps.pool, ref);
  if (!policy || !packInScope(caller, policyScope(ref, policy).pack)) throw policyNotFound(ref);
  return policy;
}

export const policyRoutes = [
  defineRoute({
    method: 'get', path: '/policies', access: 'read', operationId: 'listPolicies', tag: 'policies',
    summary: 'List policies by ref',
    query: policyListQuery, status: 200, response: list(policySchema),
    scope: 'queue',
    async handle({ query, deps }) {
      const result = await listPolicies(deps.pool, { enabled: query.enabled }, query);
      return { body: page(result.rows.map(toPolicyJson), result.total_items, query) };
    },
  }),
  defineRoute({
    method: 'post', path: '/policies', access: 'admin', operationId: 'createPolicy', tag: 'policies',
    summary: 'Create a policy',
    description: 'Takes effect at once for new executions of its scope; a changed limit applies to lanes already waiting.',
    body: policyCreateBody, status: 201, response: oneOf(policySchema),
    errors: ['policy_exists', 'unknown_action', 'invalid_policy'],
    scope: ({ body }) => policyScope(body.ref, toColumns(body)),
    async handle({ body, deps }) {
      const { policy } = await write(deps, body.ref, body, false);
      return { body: one(toPolicyJson(policy), 'policy created') };
    },
  }),
  defineRoute({
    method: 'get', path: '/policies/{ref}', access: 'read', operationId: 'getPolicy', tag: 'policies',
    summary: 'Read one policy',
    params: policyParams, status: 200, response: oneOf(policySchema), errors: ['policy_not_found'],
    async handle({ params, deps, caller }) {
      return { body: one(toPolicyJson(await existingPolicy(deps, params.ref, caller))) };
    },
  }),
  defineRoute({
    method: 'put', path: '/policies/{ref}', access: 'admin', operationId: 'putPolicy', tag: 'policies',
    summary: 'Create or replace a policy',
    description: 'Replaces the whole policy (fields left out take their defaults), keeping its id and created_at; creates it '
      + '(201) when there is none of that ref.',
    params: policyParams, body: policyPutBody, status: 200, otherStatuses: [201], response: oneOf(policySchema),
    errors: ['unknown_action', 'invalid_policy'],
    scope: ({ params, body }) => policyScope(params.ref, toColumns(body)),
    async handle({ params, body, deps, caller }) {
      // Replacing moves the policy: the one it replaces, if any, must be the caller's too.
      if (caller?.packs) {
        const replaced = await findPolicy(deps.pool, params.ref);
        if (replaced && !packInScope(caller, policyScope(params.ref, replaced).pack)) throw policyNotFound(params.ref);
      }
      if (body.ref !== undefined && body.ref !== params.ref) {
        throw new ApiError('invalid_request', `invalid body field ref: must equal the ref in the path (${params.ref})`,
          { details: [{ location: 'body', field: 'ref', message: 'must equal the ref in the path' }] });
      }
      const { policy, created } = await write(deps, params.ref, body, true);
      return created
        ? { status: 201, body: one(toPolicyJson(policy), 'policy created') }
        : { body: one(toPolicyJson(policy), 'policy replaced') };
    },
  }),
  defineRoute({
    method: 'delete', path: '/policies/{ref}', access: 'admin', operationId: 'deletePolicy', tag: 'policies',
    summary: 'Delete a policy',
    description: 'Lanes of its scope then follow the next enabled policy of the scope, or drain without limit.',
    params: policyParams, status: 200, response: oneOf(policySchema), errors: ['policy_not_found'],
    async handle({ params, deps, caller }) {
      if (caller?.packs) await existingPolicy(deps, params.ref, caller);
      const policy = await deletePolicy(deps.pool, params.ref);
      if (!policy) throw policyNotFound(params.ref);
      return { body: one(toPolicyJson(policy), 'policy deleted') };
    },
  }),
  defineRoute({
    method: 'get', path: '/actions/{ref}/policies', access: 'read', operationId: 'listActionPolicies', tag: 'policies',
    summary: 'Policies that can govern an action',
    description: 'Its own, its pack\'s and the global policies, enabled or not, in precedence order: the first enabled one '
      + 'is in force.',
    params: refParams, query: pageOnlyQuery, status: 200, response: list(policySchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, query, deps }) {
      if (!(await findAction(deps.pool, params.ref))) throw new ApiError('unknown_action', `unknown action ${params.ref}`);
      const result = await listPoliciesOfAction(deps.pool, params.ref, query);
      return { body: page(result.rows.map(toPolicyJson), result.total_items, query) };
    },
  }),
  defineRoute({
    method: 'get', path: '/packs/{ref}/policies', access: 'read', operationId: 'listPackPolicies', tag: 'policies',
    summary: 'Policies of a pack and of its actions',
    description: 'Pack-scoped policies first, then those of the pack\'s actions. Packs have no table: an unknown pack has none.',
    params: packParams, query: pageOnlyQuery, status: 200, response: list(policySchema),
    scope: ({ params }) => packScope(params.ref),
    async handle({ params, query, deps }) {
      const result = await listPoliciesOfPack(deps.pool, params.ref, query);
      return { body: page(result.rows.map(toPolicyJson), result.total_items, query) };
    },
  }),
];
