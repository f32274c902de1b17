/**
 * Input schemas of the HTTP API. The same zod schemas validate every request and generate the
 * OpenAPI document (openapi.ts), so the two cannot drift. Names follow the columns they fill.
 */
import { z } from 'zod';
import { executionStatuses } from '../db/schema.ts';

const int32 = 2_147_483_647;
const bigintMax = 9_223_372_036_854_775_807n;

// Runs even after the pattern failed (zod reports every problem), so it must not assume digits.
const fitsBigint = (value: string) => !/^[0-9]{1,19}$/.test(value) || BigInt(value) <= bigintMax;

/** A bigint id, as a string of digits. */
export const idString = z.string()
  .regex(/^[1-9][0-9]{0,18}$/, 'must be a positive whole number (as a string)')
  .refine(fitsBigint, 'must be at most 9223372036854775807')
  .meta({ description: 'A bigint id, as a string.', example: '42' });

export const actionRef = z.string().max(200)
  .regex(/^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*$/, 'must be <pack>.<name>: lowercase letters, digits, _ and -, each part starting with a letter')
  .meta({ description: 'Action reference "pack.name".', example: 'ops.restart_host' });

export const packRef = z.string().max(200)
  .regex(/^[a-z][a-z0-9_-]*$/, 'must be lowercase letters, digits, _ and -, starting with a letter')
  .meta({ description: 'Pack name: the part of an action ref before the dot.', example: 'ops' });

export const policyRef = z.string().max(200)
  .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'must be lowercase letters, digits, _, . and -, starting with a letter or digit')
  .meta({ description: 'Unique name of a policy.', example: 'one-per-host' });

export const scheduleRef = z.string().max(200)
  .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'must be lowercase letters, digits, _, . and -, starting with a letter or digit')
  .meta({ description: 'Unique name of a cron schedule.', example: 'nightly-report' });

export const instant = z.iso.datetime({ offset: true, message: 'must be an ISO 8601 date-time with a time zone, e.g. 2030-01-01T00:00:00Z' });

/** A whole number in a query string: digits only, then checked as a number. */
export function queryInt(min: number, max: number) {
  return z.string().regex(/^[0-9]{1,16}$/, 'must be a whole number').transform(Number).pipe(z.number().int().min(min).max(max));
}

export const pageQuery = {
  page: queryInt(1, 10_000_000).default(1).meta({ description: 'Page number, from 1.' }),
  per_page: queryInt(1, 100).default(50).meta({ description: 'Items per page (at most 100).' }),
};

export const statusList = z.union([z.string(), z.array(z.string())])
  .transform((value) => [...new Set((Array.isArray(value) ? value : [value]).flatMap((entry) => entry.split(',')).map((entry) => entry.trim()))])
  .pipe(z.array(z.enum(executionStatuses)).min(1).max(executionStatuses.length))
  .meta({ description: 'One or more statuses: repeat the parameter or separate them with commas.' });

const maxJsonDepth = 100;

/** How deep a JSON value nests, counted without recursion (a hostile body may nest 100 000 levels). */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (current === null || typeof current !== 'object') continue;
    if (depth > limit) return true;
    for (const child of Object.values(current)) stack.push([child, depth + 1]);
  }
  return false;
}

/** A JSON object whose values nest at most 100 levels (deeper ones could not be stored or serialised). */
export const jsonObject = z.record(z.string(), z.unknown())
  .refine((value) => !nestsDeeperThan(value, maxJsonDepth), `must not nest deeper than ${maxJsonDepth} levels`);

export const refParams = z.strictObject({ ref: actionRef });
export const idParams = z.strictObject({ id: idString.meta({ description: 'Execution id.' }) });
export const policyParams = z.strictObject({ ref: policyRef });
export const packParams = z.strictObject({ ref: packRef });
export const pageOnlyQuery = z.strictObject(pageQuery);

export const executeBody = z.strictObject({
  action_ref: actionRef,
  parameters: jsonObject.meta({ description: 'Handed to the handler; stored in the params column. A JSON object.' }),
  timeout_seconds: z.number().int().min(1).max(int32).optional().meta({ description: 'Run time limit; default: the action\'s.' }),
  run_at: instant.optional().meta({ description: 'Not before this time: the execution waits as delayed until then.' }),
  idempotency_key: z.string().min(1).max(200).optional()
    .meta({ description: 'While an execution of the action with this key has not ended, that one is returned (200) instead of a new one.' }),
  max_retries: z.number().int().min(0).max(1000).optional().meta({ description: 'Retries allowed; default: the action\'s.' }),
  parent_id: idString.optional().meta({ description: 'Provenance: the execution that caused this one.' }),
  enforcement_id: idString.optional().meta({ description: 'Provenance: the rule enforcement that caused it.' }),
});

/** The most executions one batch request may enqueue (each item as in executeBody; the body limit applies too). */
export const maxBatchExecutions = 1000;

export const executeBatchBody = z.strictObject({
  executions: z.array(executeBody).min(1).max(maxBatchExecutions)
    .meta({ description: `1 to ${maxBatchExecutions} executions, each as the body of POST /executions/execute; they join their lanes in this order.` }),
});

/** A position in the execution event log: 0 (before the first event) or a bigint, as digits. */
const eventPosition = z.string()
  .regex(/^(0|[1-9][0-9]{0,18})$/, 'must be an event id received from this stream: a whole number, 0 for the oldest kept')
  .refine(fitsBigint, 'must be at most 9223372036854775807');

/** The pack of an action_ref filter written `<pack>.*`; undefined for a plain action ref. */
export function wildcardPack(actionRef: string | undefined): string | undefined {
  return actionRef?.endsWith('.*') ? actionRef.slice(0, -2) : undefined;
}

const actionOrPackFilter = z.string().max(200)
  .regex(/^[a-z][a-z0-9_-]*\.([a-z][a-z0-9_-]*|\*)$/, 'must be <pack>.<name>, or <pack>.* for every action of a pack');

export const executionStreamQuery = z.strictObject({
  action_ref: actionOrPackFilter.optional().meta({ description: 'Only events of this action, or <pack>.* for all actions of a pack.' }),
  last_event_id: eventPosition.optional()
    .meta({ description: 'Continue after this event id (as Last-Event-ID does; the header wins when both are sent). 0 replays every event still kept.' }),
});

export const executionStreamHeaders = z.object({
  'last-event-id': eventPosition.optional()
    .meta({ description: 'Sent by EventSource when it reconnects: the stream continues after this event.' }),
});

export const executionListQuery = z.strictObject({
  status: statusList.optional(),
  action_ref: actionOrPackFilter.optional().meta({ description: 'An action, or <pack>.* for all actions of a pack.' }),
  pack_name: packRef.optional().meta({ description: 'Executions of every action of this pack.' }),
  enforcement: idString.optional().meta({ description: 'enforcement_id equals this.' }),
  parent: idString.optional().meta({ description: 'parent_id equals this.' }),
  created_after: instant.optional().meta({ description: 'created_at strictly after this instant.' }),
  created_before: instant.optional().meta({ description: 'created_at strictly before this instant.' }),
  before_id: idString.optional()
    .meta({ description: 'Keyset cursor: only ids below this one. Pass the last id of a page (with page=1) to read the next page in constant time.' }),
  ...pageQuery,
});

export const reasonBody = z.strictObject({
  reason: z.string().max(1000).optional().meta({ description: 'Why; stored with the change.' }),
}).optional();

export const actionBody = z.strictObject({
  description: z.string().max(10_000).nullable().optional(),
  enabled: z.boolean().optional().meta({ description: 'A disabled action accepts no new executions; waiting ones stay.' }),
  timeout_seconds: z.number().int().min(1).max(int32).optional(),
  max_retries: z.number().int().min(0).max(1000).optional(),
  retry_delay_seconds: z.number().positive().max(31_536_000).optional(),
  retry_backoff_factor: z.number().min(1).max(100).optional(),
  retry_max_delay_seconds: z.number().positive().max(31_536_000).optional(),
  retry_jitter: z.number().min(0).max(1).optional(),
});

export const actionListQuery = z.strictObject({ pack_name: packRef.optional(), ...pageQuery });

const scopeSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('global') }),
  z.strictObject({ type: z.literal('pack'), pack_ref: packRef }),
  z.strictObject({ type: z.literal('action'), action_ref: actionRef }),
]).meta({ description: 'What the policy governs: everything, one pack, or one action. The narrowest enabled scope wins.' });

const dotPath = z.string().min(1).max(200).regex(/^[^.]+(\.[^.]+)*$/, 'must be a dot-path into params, e.g. host or target.region');

const quotaSchema = z.strictObject({
  quota_type: z.enum(['running_executions', 'executions_total']),
  limit: z.number().int().min(0).max(int32),
});

const policyFields = {
  ref: policyRef,
  description: z.string().max(10_000).nullable().optional(),
  enabled: z.boolean(),
  priority: z.number().int().min(-int32 - 1).max(int32).meta({ description: 'Tie-break within a scope: highest wins.' }),
  scope: scopeSchema,
  concurrency: z.strictObject({
    limit: z.number().int().min(0).max(int32).nullable()
      .meta({ description: 'Executions of one lane holding a slot at once (column threshold); null: no limit.' }),
    method: z.enum(['enqueue', 'cancel']).default('enqueue')
      .meta({ description: 'enqueue: wait in the FIFO lane. cancel: cancel when no slot is free.' }),
    parameters: z.array(dotPath).max(8).default([])
      .meta({ description: 'Dot-paths into params; each combination of values is a lane of its own.' }),
  }).optional(),
  rate_limit: z.strictObject({
    max_executions: z.number().int().min(1).max(int32),
    window_seconds: z.number().int().min(1).max(int32),
  }).nullable().optional().meta({ description: 'At most max_executions admissions per lane in any window_seconds.' }),
  quotas: z.array(quotaSchema).max(2)
    .refine((quotas) => new Set(quotas.map((quota) => quota.quota_type)).size === quotas.length, 'names a quota type twice')
    .optional().meta({ description: 'Limits over the whole scope.' }),
  on_failure: z.enum(['wait', 'block', 'skip']).optional().meta({ description: 'What a lane does while its head fails (default wait).' }),
  max_queue_length: z.number().int().min(0).max(int32).optional().meta({ description: 'Most executions waiting per lane (default 10000).' }),
  queue_timeout_seconds: z.number().int().min(1).max(int32).nullable().optional()
    .meta({ description: 'Longest wait in a lane before the execution is cancelled.' }),
};

export const policyCreateBody = z.strictObject(policyFields);
export const policyPutBody = z.strictObject({
  ...policyFields,
  ref: policyRef.optional().meta({ description: 'If given, must equal the ref in the path.' }),
});
export type PolicyBody = z.output<typeof policyCreateBody>;

export const policyListQuery = z.strictObject({
  enabled: z.enum(['true', 'false']).transform((value) => value === 'true').pipe(z.boolean()).optional()
    .meta({ description: 'Only enabled (true) or disabled (false) policies.' }),
  ...pageQuery,
});

export const scheduleParams = z.strictObject({ ref: scheduleRef });

export const scheduleListQuery = z.strictObject({
  action_ref: actionOrPackFilter.optional().meta({ description: 'Only schedules of this action, or <pack>.* for all actions of a pack.' }),
  enabled: z.enum(['true', 'false']).transform((value) => value === 'true').pipe(z.boolean()).optional()
    .meta({ description: 'Only enabled (true) or disabled (false) schedules.' }),
  ...pageQuery,
});

export const schedulePutBody = z.strictObject({
  action_ref: actionRef.meta({ description: 'The action each tick enqueues.' }),
  cron: z.string().min(1).max(200)
    .meta({ description: 'Cron expression: 5 fields, 6 (leading seconds) or 7 (trailing year), or @hourly, @daily, @weekly, @monthly, @yearly.', example: '0 3 * * *' }),
  timezone: z.string().min(1).max(100).optional().meta({ description: 'IANA time zone the cron fields are read in; default UTC.', example: 'Europe/Paris' }),
  params: jsonObject.optional().meta({ description: 'Parameters of every execution it enqueues: a JSON object; default {}.' }),
  enabled: z.boolean().optional().meta({ description: 'Default true. A disabled schedule fires nothing; enabling it again starts from the next tick.' }),
  max_backfill: z.number().int().min(0).max(1000).optional()
    .meta({ description: 'After downtime, how many missed ticks before the latest due one still fire; default 1.' }),
  description: z.string().max(10_000).nullable().optional(),
});

export const workerListQuery = z.strictObject({ status: z.enum(['active', 'stopped', 'lost']).optional(), ...pageQuery });
