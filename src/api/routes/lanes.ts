/**
 * /lanes: pause a lane until a time, resume it, unblock it. Lane keys hold ':', '#' and JSON, so
 * they travel in the body rather than the path.
 */
import { z } from 'zod';
import { pauseLane, resumeLane, unblockLane } from '../../queue/lanes.ts';
import { ApiError } from '../errors.ts';
import { laneSchema, one as oneOf } from '../resources.ts';
import { defineRoute, one } from '../route.ts';
import { laneScope } from '../scope.ts';
import { instant } from '../schemas.ts';

const laneKey = z.string().max(1000)
  .regex(/^(action:[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*|pack:[a-z][a-z0-9_-]*|global)(#.+)?$/,
    'must be a lane key: action:<pack.name>, pack:<pack> or global, then #<group values> for a grouped lane')
  .meta({ description: 'The lane, as usher.lane_stats.lane_key shows it.' });

const laneBody = z.strictObject({ lane_key: laneKey });
const pauseBody = z.strictObject({
  lane_key: laneKey,
  until: instant.meta({ description: 'No admission into the lane before this time.' }),
  reason: z.string().max(1000).optional(),
});

function unknownLane(key: string): ApiError {
  return new ApiError('lane_not_found', `no lane ${key} (a lane exists while executions wait in it or it has a row)`);
}

export const laneRoutes = [
  defineRoute({
    method: 'post', path: '/lanes/pause', access: 'admin', operationId: 'pauseLane', tag: 'lanes',
    summary: 'Pause admission into one lane until a time',
    description: 'usher.pause_lane: waiting executions keep their order; running ones finish.',
    body: pauseBody, status: 200, response: oneOf(laneSchema), errors: ['lane_not_found'],
    scope: ({ body }) => laneScope(body.lane_key),
    async handle({ body, deps }) {
      const lane = await pauseLane(deps.pool, body.lane_key, body.until, body.reason ?? null);
      if (!lane) throw unknownLane(body.lane_key);
      return { body: one(lane, 'lane paused') };
    },
  }),
  defineRoute({
    method: 'post', path: '/lanes/resume', access: 'admin', operationId: 'resumeLane', tag: 'lanes',
    summary: 'Lift a lane pause at once',
    body: laneBody, status: 200, response: oneOf(laneSchema), errors: ['lane_not_found'],
    scope: ({ body }) => laneScope(body.lane_key),
    async handle({ body, deps }) {
      const lane = await resumeLane(deps.pool, body.lane_key);
      if (!lane) throw unknownLane(body.lane_key);
      return { body: one(lane, 'lane resumed') };
    },
  }),
  defineRoute({
    method: 'post', path: '/lanes/unblock', access: 'admin', operationId: 'unblockLane', tag: 'lanes',
    summary: 'Let a blocked lane move on without the execution that blocks it',
    description: 'usher.unblock_lane: the failed head stays failed; POST /executions/{id}/retry retries it instead.',
    body: laneBody, status: 200, response: oneOf(laneSchema), errors: ['lane_not_found'],
    scope: ({ body }) => laneScope(body.lane_key),
    async handle({ body, deps }) {
      const lane = await unblockLane(deps.pool, body.lane_key);
      if (!lane) throw unknownLane(body.lane_key);
      return { body: one(lane, 'lane unblocked') };
    },
  }),
];
