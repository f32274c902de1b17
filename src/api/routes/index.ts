/**
 * Every route of the API, in matching order: a fixed path ("/executions/stats") comes before the
 * parameterised one it would also match ("/executions/{id}").
 */
import type { Route } from '../route.ts';
import { actionRoutes } from './actions.ts';
import { executionRoutes } from './executions.ts';
import { laneRoutes } from './lanes.ts';
import { metricsRoutes } from './metrics.ts';
import { policyRoutes } from './policies.ts';
import { queueStatsRoutes } from './queue-stats.ts';
import { scheduleRoutes } from './schedules.ts';
import { streamRoutes } from './stream.ts';
import { systemRoutes } from './system.ts';
import { workerRoutes } from './workers.ts';

export function allRoutes(openapi: () => unknown): Route[] {
  return [
    ...streamRoutes,
    ...executionRoutes,
    ...actionRoutes,
    ...queueStatsRoutes,
    ...laneRoutes,
    ...policyRoutes,
    ...scheduleRoutes,
    ...workerRoutes,
    ...metricsRoutes,
    ...systemRoutes(openapi),
  ];
}
