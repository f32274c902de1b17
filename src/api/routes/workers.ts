/** /workers: worker processes with the age of their heartbeat and what they run now. */
import { listWorkers } from '../../queue/workers.ts';
import { list, workerSchema } from '../resources.ts';
import { defineRoute, page } from '../route.ts';
import { workerListQuery } from '../schemas.ts';

export const workerRoutes = [
  defineRoute({
    method: 'get', path: '/workers', access: 'read', operationId: 'listWorkers', tag: 'workers',
    scope: 'queue',
    summary: 'List worker processes, newest first',
    description: 'One row per worker process start (stopped and lost ones stay as history). heartbeat_age_seconds is by '
      + 'the database clock; running_count counts the executions it holds a lease on.',
    query: workerListQuery, status: 200, response: list(workerSchema),
    async handle({ query, deps }) {
      const result = await listWorkers(deps.pool, { status: query.status }, query);
      return { body: page(result.rows, result.total_items, query) };
    },
  }),
];
