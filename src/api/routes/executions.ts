/** /executions: enqueue (one or a batch), read, list, count, cancel and retry. */
import { z } from 'zod';
import { enabledByRef } from '../../queue/actions.ts';
import { cancelExecution } from '../../queue/cancel.ts';
import { enqueueReportingExisting, type EnqueueInput } from '../../queue/enqueue.ts';
import { countExecutions, findExecution, listExecutions, toExecutionRecord } from '../../queue/executions-read.ts';
import { retryExecution } from '../../queue/retry.ts';
import type { Caller } from '../auth.ts';
import { ApiError, type FieldProblem } from '../errors.ts';
import { batchEntrySchema, executionSchema, executionStatsSchema, list, one as oneOf } from '../resources.ts';
import { defineRoute, one, page, type ApiDeps } from '../route.ts';
import { actionInScope, actionScope, allowedPacks } from '../scope.ts';
import { executeBatchBody, executeBody, executionListQuery, idParams, reasonBody, wildcardPack } from '../schemas.ts';

/** The execution, if it exists and the caller may see it: one outside the token's packs is not found either. */
async function existingExecution(deps: ApiDeps, id: string, caller: Caller | undefined) {
  const execution = await findExecution(deps.pool, id);
  if (!execution || !actionInScope(caller, execution.action_ref)) throw new ApiError('execution_not_found', `no execution with id ${id}`);
  return execution;
}

/** The body of an execute request as the queue's enqueue input (parameters are stored as params). */
function enqueueInput(body: z.output<typeof executeBody>): EnqueueInput {
  return {
    action_ref: body.action_ref,
    params: body.parameters,
    timeout_seconds: body.timeout_seconds,
    run_at: body.run_at,
    idempotency_key: body.idempotency_key,
    max_retries: body.max_retries,
    parent_id: body.parent_id,
    enforcement_id: body.enforcement_id,
  };
}

/**
 * Refuses a batch naming an action that does not exist (404) or is disabled (409) before anything is
 * inserted, naming every such item. The insert's own trigger stays the authority (an action deleted
 * meanwhile still fails the whole batch); this only says which items are wrong.
 */
async function refuseUnusableActions(deps: ApiDeps, inputs: readonly EnqueueInput[]): Promise<void> {
  const enabled = await enabledByRef(deps.pool, inputs.map((input) => input.action_ref));
  const problems: (FieldProblem & { unknown: boolean })[] = inputs.flatMap((input, index) => {
    const state = enabled.get(input.action_ref);
    if (state === true) return [];
    const unknown = state === undefined;
    const message = unknown ? `unknown action ${input.action_ref}` : `action ${input.action_ref} is disabled`;
    return [{ location: 'body' as const, field: `executions.${index}.action_ref`, message, unknown }];
  });
  if (problems.length === 0) return;
  // 404 when any action is unknown, else 409; the details list both kinds.
  const first = problems.find((problem) => problem.unknown) ?? problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more)` : '';
  throw new ApiError(first.unknown ? 'unknown_action' : 'action_disabled', `${first.field}: ${first.message}; nothing was enqueued${more}`,
    { details: problems.map(({ location, field, message }) => ({ location, field, message })) });
}

export const executionRoutes = [
  defineRoute({
    method: 'post', path: '/executions/execute', access: 'write', operationId: 'executeAction', tag: 'executions',
    summary: 'Enqueue an execution of an action',
    description: 'Inserts into usher.executions (201). With an idempotency_key that an execution of the same action still '
      + 'holds (it has not ended), answers 200 with that execution instead.',
    body: executeBody, status: 201, otherStatuses: [200], response: oneOf(executionSchema),
    errors: ['unknown_action', 'action_disabled', 'invalid_execution'],
    scope: ({ body }) => actionScope(body.action_ref),
    async handle({ body, deps }) {
      try {
        const [entry] = await enqueueReportingExisting(deps.pool, [enqueueInput(body)]);
        const execution = toExecutionRecord(entry!.execution as unknown as Record<string, unknown>);
        return entry!.existing
          ? { status: 200, body: one(execution, `an execution with idempotency_key ${JSON.stringify(body.idempotency_key)} exists; returned it`) }
          : { body: one(execution) };
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === 'unknown_action') throw new ApiError('unknown_action', `unknown action ${body.action_ref}`);
        if (code === 'action_disabled') throw new ApiError('action_disabled', `action ${body.action_ref} is disabled`);
        throw error;
      }
    },
  }),
  defineRoute({
    method: 'post', path: '/executions/execute-batch', access: 'write', operationId: 'executeActions', tag: 'executions',
    summary: 'Enqueue many executions in one request',
    description: 'Inserts every execution in one statement: all are enqueued, or none (any bad item refuses the whole batch, '
      + 'and the error names each bad item as executions.<index>.<field>). They join their lanes in the order given. Each '
      + 'answer entry, in the same order, holds the execution and whether it already existed (an idempotency_key still held, '
      + 'also by an earlier item of the same batch). 201 when at least one was inserted, 200 when every item existed.',
    body: executeBatchBody, status: 201, otherStatuses: [200], response: oneOf(z.array(batchEntrySchema)),
    errors: ['unknown_action', 'action_disabled', 'invalid_execution'],
    scope: ({ body }) => body.executions.map((item) => actionScope(item.action_ref)),
    async handle({ body, deps }) {
      const inputs = body.executions.map(enqueueInput);
      await refuseUnusableActions(deps, inputs);
      const entries = await enqueueReportingExisting(deps.pool, inputs);
      const existing = entries.filter((entry) => entry.existing).length;
      const data = entries.map((entry) => ({
        existing: entry.existing,
        execution: toExecutionRecord(entry.execution as unknown as Record<string, unknown>),
      }));
      return existing === 0
        ? { body: { data } }
        : {
          status: existing === entries.length ? 200 : 201,
          body: { data, message: `${entries.length - existing} enqueued; ${existing} held an idempotency key and returned the execution that holds it` },
        };
    },
  }),
  defineRoute({
    method: 'get', path: '/executions', access: 'read', operationId: 'listExecutions', tag: 'executions',
    summary: 'List executions, newest first',
    description: 'All filters combine with AND. Paged by page/per_page; before_id reads the page below an id in constant time.',
    query: executionListQuery, status: 200, response: list(executionSchema),
    async handle({ query, deps, caller }) {
      // action_ref "pack.*" is a pack filter; with pack_name as well, both must hold.
      const wildcard = wildcardPack(query.action_ref);
      const packs = [...new Set([wildcard, query.pack_name].filter((pack): pack is string => pack !== undefined))];
      const result = await listExecutions(deps.pool, {
        statuses: query.status,
        action_ref: wildcard === undefined ? query.action_ref : undefined,
        pack_refs: packs,
        within_packs: allowedPacks(caller),
        enforcement_id: query.enforcement,
        parent_id: query.parent,
        created_after: query.created_after,
        created_before: query.created_before,
        before_id: query.before_id,
      }, query);
      return { body: page(result.rows, result.total_items, query) };
    },
  }),
  defineRoute({
    method: 'get', path: '/executions/stats', access: 'read', operationId: 'executionStats', tag: 'executions',
    summary: 'Count executions by status',
    description: 'pending = delayed + requested + scheduled (not claimed yet); running includes canceling (still running '
      + 'until its worker stops it). total counts every status.',
    status: 200, response: oneOf(executionStatsSchema),
    async handle({ deps, caller }) {
      return { body: one(await countExecutions(deps.pool, allowedPacks(caller))) };
    },
  }),
  defineRoute({
    method: 'get', path: '/executions/{id}', access: 'read', operationId: 'getExecution', tag: 'executions',
    summary: 'Read one execution',
    params: idParams, status: 200, response: oneOf(executionSchema), errors: ['execution_not_found'],
    async handle({ params, deps, caller }) {
      return { body: one(await existingExecution(deps, params.id, caller)) };
    },
  }),
  defineRoute({
    method: 'post', path: '/executions/{id}/cancel', access: 'write', operationId: 'cancelExecution', tag: 'executions',
    summary: 'Cancel an execution',
    description: 'A waiting or admitted execution ends cancelled at once; a running one becomes canceling until its worker '
      + 'has stopped the handler. 409 when it has already ended.',
    params: idParams, body: reasonBody, status: 200, response: oneOf(executionSchema),
    errors: ['execution_not_found', 'execution_terminal'],
    async handle({ params, body, deps, caller }) {
      if (caller?.packs) await existingExecution(deps, params.id, caller);
      const outcome = await cancelExecution(deps.pool, params.id, body?.reason).catch((error: unknown) => {
        if ((error as { code?: unknown }).code === 'execution_not_found') throw new ApiError('execution_not_found', `no execution with id ${params.id}`);
        throw error;
      });
      if (!outcome.changed) {
        throw new ApiError('execution_terminal', `execution ${params.id} has already ended (${outcome.status}); there is nothing to cancel`);
      }
      const message = outcome.status === 'canceling'
        ? 'cancel requested: the execution is running and its worker is stopping it'
        : 'execution cancelled';
      return { body: one(await existingExecution(deps, params.id, caller), message) };
    },
  }),
  defineRoute({
    method: 'post', path: '/executions/{id}/retry', access: 'write', operationId: 'retryExecution', tag: 'executions',
    summary: 'Retry an ended execution',
    description: 'usher.retry_execution: a failed, timeout, abandoned or cancelled execution goes back to its old place in '
      + 'its lane as a new attempt. 409 for any other status.',
    params: idParams, status: 200, response: oneOf(executionSchema), errors: ['execution_not_found', 'execution_not_retryable'],
    async handle({ params, deps, caller }) {
      if (caller?.packs) await existingExecution(deps, params.id, caller);
      const outcome = await retryExecution(deps.pool, params.id);
      if (outcome.outcome === 'not_found') throw new ApiError('execution_not_found', `no execution with id ${params.id}`);
      if (outcome.outcome === 'not_retryable') {
        throw new ApiError('execution_not_retryable',
          `execution ${params.id} is ${outcome.status ?? 'gone'}; only failed, timeout, abandoned or cancelled executions can be retried`);
      }
      return { body: one(await existingExecution(deps, params.id, caller), `execution retried: it is ${outcome.status}`) };
    },
  }),
];
