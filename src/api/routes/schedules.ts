/**
 * /schedules: cron schedules (usher.schedules), read by anyone who may read, written by admins. A
 * schedule belongs to its action's pack. The cron expression and time zone are checked here with the
 * parser the executor fires them with, so one the executor would reject is refused now, with the
 * field named, rather than recorded later in the schedule's error column.
 */
import { parseSchedule, ScheduleError } from '../../executor/schedules.ts';
import { deleteSchedule, findSchedule, listSchedules, putSchedule, type ScheduleRecord } from '../../queue/schedules.ts';
import type { Caller } from '../auth.ts';
import { ApiError } from '../errors.ts';
import { list, one as oneOf, scheduleSchema } from '../resources.ts';
import { defineRoute, one, page, type ApiDeps } from '../route.ts';
import { actionInScope, actionScope, allowedPacks } from '../scope.ts';
import { scheduleListQuery, scheduleParams, schedulePutBody, wildcardPack } from '../schemas.ts';

const scheduleNotFound = (ref: string) => new ApiError('schedule_not_found', `no schedule named ${ref}`);

/** The schedule, if it exists and its action is of the caller's packs: one outside them is not found either. */
async function existingSchedule(deps: ApiDeps, ref: string, caller: Caller | undefined): Promise<ScheduleRecord> {
  const schedule = await findSchedule(deps.pool, ref);
  if (!schedule || !actionInScope(caller, schedule.action_ref)) throw scheduleNotFound(ref);
  return schedule;
}

const badField = (field: 'cron' | 'timezone' | 'params' | 'max_backfill', message: string) =>
  new ApiError('invalid_request', `invalid body field ${field}: ${message}`, { details: [{ location: 'body', field, message }] });

/** What the database refused, by its constraint, as the body field it concerns. */
const fieldOfConstraint: Record<string, 'cron' | 'timezone' | 'params' | 'max_backfill'> = {
  schedules_cron_shape: 'cron',
  schedules_timezone_known: 'timezone',
  schedules_params_is_object: 'params',
  schedules_max_backfill_range: 'max_backfill',
};

export const scheduleRoutes = [
  defineRoute({
    method: 'get', path: '/schedules', access: 'read', operationId: 'listSchedules', tag: 'schedules',
    summary: 'List cron schedules by ref',
    query: scheduleListQuery, status: 200, response: list(scheduleSchema),
    async handle({ query, deps, caller }) {
      const pack = wildcardPack(query.action_ref);
      const result = await listSchedules(deps.pool, {
        action_ref: pack === undefined ? query.action_ref : undefined,
        pack_ref: pack,
        enabled: query.enabled,
        within_packs: allowedPacks(caller),
      }, query);
      return { body: page(result.rows, result.total_items, query) };
    },
  }),
  defineRoute({
    method: 'get', path: '/schedules/{ref}', access: 'read', operationId: 'getSchedule', tag: 'schedules',
    summary: 'Read one cron schedule',
    params: scheduleParams, status: 200, response: oneOf(scheduleSchema), errors: ['schedule_not_found'],
    async handle({ params, deps, caller }) {
      return { body: one(await existingSchedule(deps, params.ref, caller)) };
    },
  }),
  defineRoute({
    method: 'put', path: '/schedules/{ref}', access: 'admin', operationId: 'putSchedule', tag: 'schedules',
    summary: 'Create or replace a cron schedule',
    description: 'Replaces the whole schedule (fields left out take their defaults), keeping its id, created_at and the '
      + 'ticks it has fired; creates it (201) when there is none of that ref. A new schedule, or one whose cron, timezone or '
      + 'enabled changed, starts from its next tick after now: missed ticks before that are not fired.',
    params: scheduleParams, body: schedulePutBody, status: 200, otherStatuses: [201], response: oneOf(scheduleSchema),
    errors: ['unknown_action'],
    scope: ({ body }) => actionScope(body.action_ref),
    async handle({ params, body, deps, caller }) {
      // Replacing can move the schedule to another action: the one it replaces must be the caller's too.
      if (caller?.packs) {
        const replaced = await findSchedule(deps.pool, params.ref);
        if (replaced && !actionInScope(caller, replaced.action_ref)) throw scheduleNotFound(params.ref);
      }
      const timezone = body.timezone ?? 'UTC';
      try {
        if (parseSchedule(params.ref, body.cron, timezone).nextRun() === null) {
          throw badField('cron', `cron expression ${JSON.stringify(body.cron)} has no tick after now`);
        }
      } catch (error) {
        if (error instanceof ScheduleError) throw badField(error.field, error.reason);
        throw error;
      }
      const outcome = await putSchedule(deps.pool, params.ref, {
        description: body.description ?? null,
        action_ref: body.action_ref,
        cron: body.cron,
        timezone,
        params: body.params,
        enabled: body.enabled,
        max_backfill: body.max_backfill,
      });
      if (outcome.outcome === 'unknown_action') throw new ApiError('unknown_action', `unknown action ${body.action_ref}`);
      if (outcome.outcome === 'refused') {
        const field = fieldOfConstraint[outcome.constraint];
        if (!field) throw new ApiError('invalid_request', `the schedule was refused by the database (constraint ${outcome.constraint})`);
        throw badField(field, `refused by the database (constraint ${outcome.constraint})`);
      }
      return outcome.created
        ? { status: 201, body: one(outcome.schedule, 'schedule created') }
        : { body: one(outcome.schedule, 'schedule replaced') };
    },
  }),
  defineRoute({
    method: 'delete', path: '/schedules/{ref}', access: 'admin', operationId: 'deleteSchedule', tag: 'schedules',
    summary: 'Delete a cron schedule',
    description: 'It fires no more ticks. Executions it enqueued stay, with its id in schedule_id.',
    params: scheduleParams, status: 200, response: oneOf(scheduleSchema), errors: ['schedule_not_found'],
    async handle({ params, deps, caller }) {
      if (caller?.packs) await existingSchedule(deps, params.ref, caller);
      const deleted = await deleteSchedule(deps.pool, params.ref);
      if (!deleted) throw scheduleNotFound(params.ref);
      return { body: one(deleted, 'schedule deleted') };
    },
  }),
];
