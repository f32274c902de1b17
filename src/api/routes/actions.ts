/** /actions: list, read, create or change, delete, pause and resume, and purge the queue. */
import { deleteAction, findAction, listActions, pauseAction, putAction, resumeAction } from '../../queue/actions.ts';
import { cancelWaiting } from '../../queue/cancel.ts';
import { ApiError } from '../errors.ts';
import { actionSchema, cancelWaitingSchema, list, one as oneOf } from '../resources.ts';
import { defineRoute, one, page } from '../route.ts';
import { actionScope, allowedPacks } from '../scope.ts';
import { actionBody, actionListQuery, reasonBody, refParams } from '../schemas.ts';

const unknownAction = (ref: string) => new ApiError('unknown_action', `unknown action ${ref}`);

export const actionRoutes = [
  defineRoute({
    method: 'get', path: '/actions', access: 'read', operationId: 'listActions', tag: 'actions',
    summary: 'List actions by ref',
    query: actionListQuery, status: 200, response: list(actionSchema),
    async handle({ query, deps, caller }) {
      const result = await listActions(deps.pool, { pack_ref: query.pack_name, within_packs: allowedPacks(caller) }, query);
      return { body: page(result.rows, result.total_items, query) };
    },
  }),
  defineRoute({
    method: 'get', path: '/actions/{ref}', access: 'read', operationId: 'getAction', tag: 'actions',
    summary: 'Read one action',
    params: refParams, status: 200, response: oneOf(actionSchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, deps }) {
      const action = await findAction(deps.pool, params.ref);
      if (!action) throw unknownAction(params.ref);
      return { body: one(action) };
    },
  }),
  defineRoute({
    method: 'put', path: '/actions/{ref}', access: 'admin', operationId: 'putAction', tag: 'actions',
    summary: 'Create an action, or change the settings given',
    description: 'Creates the action (201) or changes the fields present on an existing one (200); fields left out keep '
      + 'their value, or take the defaults on a new action. Workers register the actions they run by themselves.',
    params: refParams, body: actionBody, status: 200, otherStatuses: [201], response: oneOf(actionSchema),
    scope: ({ params }) => actionScope(params.ref),
    errors: ['invalid_action'],
    async handle({ params, body, deps }) {
      const { action, created } = await putAction(deps.pool, params.ref, body);
      return created ? { status: 201, body: one(action, 'action created') } : { body: one(action, 'action updated') };
    },
  }),
  defineRoute({
    method: 'delete', path: '/actions/{ref}', access: 'admin', operationId: 'deleteAction', tag: 'actions',
    summary: 'Delete an action and its policies',
    description: 'Refused (409) while executions of the action are delayed, waiting, admitted or running. Its policies '
      + 'and schedules are deleted with it; ended executions stay as history.',
    params: refParams, status: 200, response: oneOf(actionSchema), errors: ['unknown_action', 'action_busy'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, deps }) {
      const outcome = await deleteAction(deps.pool, params.ref);
      if (outcome.outcome === 'not_found') throw unknownAction(params.ref);
      if (outcome.outcome === 'busy') {
        throw new ApiError('action_busy',
          `action ${params.ref} has ${outcome.unfinished} executions that have not ended; cancel them or let them finish first`);
      }
      if (outcome.outcome === 'enqueue_open') {
        throw new ApiError('action_busy',
          `a transaction that is enqueuing executions of ${params.ref} is still open; try again once it has committed or rolled back`);
      }
      return { body: one(outcome.action, 'action deleted') };
    },
  }),
  defineRoute({
    method: 'post', path: '/actions/{ref}/pause', access: 'admin', operationId: 'pauseAction', tag: 'actions',
    summary: 'Pause admission of an action',
    description: 'usher.pause_action: waiting executions stay in order, running ones finish, nothing new is admitted.',
    params: refParams, body: reasonBody, status: 200, response: oneOf(actionSchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, body, deps }) {
      const action = await pauseAction(deps.pool, params.ref, body?.reason ?? null);
      if (!action) throw unknownAction(params.ref);
      return { body: one(action, 'action paused') };
    },
  }),
  defineRoute({
    method: 'post', path: '/actions/{ref}/cancel-waiting', access: 'admin', operationId: 'cancelWaitingExecutions', tag: 'actions',
    summary: 'Purge the queue of an action',
    description: 'usher.cancel_waiting, in transactions of 1,000: every execution of the action that has not started (delayed, '
      + 'waiting in its lane, or admitted and not yet claimed) and was enqueued before the request ends cancelled, with the '
      + 'reason as its result; an admitted one gives its slot back. Running executions are left alone (cancel them one by one); '
      + 'executions enqueued meanwhile are kept. To stop new ones being admitted first, pause the action.',
    params: refParams, body: reasonBody, status: 200, response: oneOf(cancelWaitingSchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, body, deps }) {
      if (!(await findAction(deps.pool, params.ref))) throw unknownAction(params.ref);
      const cancelled = await cancelWaiting(deps.pool, params.ref, body?.reason ?? 'cancelled with the waiting queue of the action');
      return { body: one({ action_ref: params.ref, cancelled }, `${cancelled} waiting execution${cancelled === 1 ? '' : 's'} cancelled`) };
    },
  }),
  defineRoute({
    method: 'post', path: '/actions/{ref}/resume', access: 'admin', operationId: 'resumeAction', tag: 'actions',
    summary: 'Resume admission of a paused action',
    params: refParams, status: 200, response: oneOf(actionSchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, deps }) {
      const action = await resumeAction(deps.pool, params.ref);
      if (!action) throw unknownAction(params.ref);
      return { body: one(action, 'action resumed') };
    },
  }),
];
