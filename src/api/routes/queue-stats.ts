/** Queue and lane statistics: /queue-stats, /actions/{ref}/queue-stats and /actions/{ref}/lanes. */
import { findAction } from '../../queue/actions.ts';
import { findQueueStats, listActionLanes, listQueueStats } from '../../queue/action-stats.ts';
import { ApiError } from '../errors.ts';
import { laneSchema, list, one as oneOf, queueStatsSchema } from '../resources.ts';
import { defineRoute, one, page } from '../route.ts';
import { actionScope } from '../scope.ts';
import { pageOnlyQuery, refParams } from '../schemas.ts';

export const queueStatsRoutes = [
  defineRoute({
    method: 'get', path: '/queue-stats', access: 'read', operationId: 'listQueueStats', tag: 'queue stats',
    scope: 'queue',
    summary: 'Queue statistics of every action',
    query: pageOnlyQuery, status: 200, response: list(queueStatsSchema),
    async handle({ query, deps }) {
      const result = await listQueueStats(deps.pool, query);
      return { body: page(result.rows, result.total_items, query) };
    },
  }),
  defineRoute({
    method: 'get', path: '/actions/{ref}/queue-stats', access: 'read', operationId: 'getActionQueueStats', tag: 'queue stats',
    summary: 'Queue statistics of one action',
    description: 'queue_length: waiting in a lane; active_count: holding a slot (scheduled, running, canceling); '
      + 'max_concurrent: threshold of the policy that governs new executions (null: no limit).',
    params: refParams, status: 200, response: oneOf(queueStatsSchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, deps }) {
      const stats = await findQueueStats(deps.pool, params.ref);
      if (!stats) throw new ApiError('unknown_action', `unknown action ${params.ref}`);
      return { body: one(stats) };
    },
  }),
  defineRoute({
    method: 'get', path: '/actions/{ref}/lanes', access: 'read', operationId: 'listActionLanes', tag: 'queue stats',
    summary: 'FIFO lanes of an action',
    description: 'Lanes of the action\'s own scope, and every pack or global lane in which one of its executions waits or '
      + 'holds a slot (from usher.lane_stats), by lane_key.',
    params: refParams, query: pageOnlyQuery, status: 200, response: list(laneSchema), errors: ['unknown_action'],
    scope: ({ params }) => actionScope(params.ref),
    async handle({ params, query, deps }) {
      if (!(await findAction(deps.pool, params.ref))) throw new ApiError('unknown_action', `unknown action ${params.ref}`);
      const result = await listActionLanes(deps.pool, params.ref, query);
      return { body: page(result.rows, result.total_items, query) };
    },
  }),
];
