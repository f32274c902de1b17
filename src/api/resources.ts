/**
 * Response schemas of the HTTP API: what each resource looks like as JSON, and the two envelopes.
 * They document the responses in the OpenAPI document, and the tests check real responses against them.
 */
import { z } from 'zod';
import { executionStatuses } from '../db/schema.ts';

const id = z.string().meta({ description: 'A bigint id, as a string.' });
const time = z.iso.datetime();
const json = z.unknown().meta({ description: 'Any JSON value.' });

export const paginationSchema = z.object({
  page: z.number().int(),
  page_size: z.number().int(),
  total_items: z.number().int(),
  total_pages: z.number().int(),
}).meta({ id: 'Pagination' });

export function one<T extends z.ZodType>(data: T) {
  return z.object({ data, message: z.string().optional() });
}

export function list<T extends z.ZodType>(item: T) {
  return z.object({ data: z.array(item), pagination: paginationSchema });
}

export const executionSchema = z.object({
  id,
  action_ref: z.string(),
  params: z.record(z.string(), json),
  status: z.enum(executionStatuses),
  lane_key: z.string().nullable(),
  queue_position: id.nullable(),
  queued_at: time.nullable(),
  run_at: time.nullable(),
  max_retries: z.number().int().nullable(),
  idempotency_key: z.string().nullable(),
  result: json,
  error: z.string().nullable(),
  timeout_seconds: z.number().int().nullable(),
  attempt: z.number().int(),
  worker_id: id.nullable(),
  lease_expires_at: time.nullable(),
  enforcement_id: id.nullable(),
  parent_id: id.nullable(),
  schedule_id: id.nullable(),
  schedule_tick: time.nullable(),
  created_at: time,
  scheduled_at: time.nullable(),
  started_at: time.nullable(),
  completed_at: time.nullable(),
  updated_at: time,
}).meta({ id: 'Execution', description: 'A row of usher.executions (without its lease token).' });

export const batchEntrySchema = z.object({
  existing: z.boolean().meta({ description: 'true: the idempotency key was held, and this is the execution that holds it; nothing was inserted for this item.' }),
  execution: executionSchema,
}).meta({ id: 'BatchEntry' });

export const executionStatsSchema = z.object({
  total: z.number().int(),
  completed: z.number().int(),
  failed: z.number().int(),
  running: z.number().int().meta({ description: 'running + canceling (a canceling execution still runs until its worker stops it).' }),
  pending: z.number().int().meta({ description: 'delayed + requested + scheduled: not yet claimed by a worker.' }),
  cancelled: z.number().int(),
  timeout: z.number().int(),
  abandoned: z.number().int(),
}).meta({ id: 'ExecutionStats' });

export const actionSchema = z.object({
  ref: z.string(),
  pack_ref: z.string(),
  description: z.string().nullable(),
  enabled: z.boolean(),
  timeout_seconds: z.number().int(),
  max_retries: z.number().int(),
  retry_delay_seconds: z.number(),
  retry_backoff_factor: z.number(),
  retry_max_delay_seconds: z.number(),
  retry_jitter: z.number(),
  paused_at: time.nullable(),
  pause_reason: z.string().nullable(),
  created_at: time,
  updated_at: time,
}).meta({ id: 'Action', description: 'A row of usher.actions.' });

export const cancelWaitingSchema = z.object({
  action_ref: z.string(),
  cancelled: z.number().int().meta({ description: 'Executions this request cancelled.' }),
}).meta({ id: 'CancelledWaiting' });

export const queueStatsSchema = z.object({
  action_ref: z.string(),
  queue_length: z.number().int(),
  active_count: z.number().int(),
  max_concurrent: z.number().int().nullable(),
  oldest_enqueued_at: time.nullable(),
  total_enqueued: z.number().int(),
  total_completed: z.number().int(),
  last_updated: time,
}).meta({ id: 'QueueStats', description: 'A row of the view usher.queue_stats.' });

export const laneSchema = z.object({
  lane_key: z.string(),
  scope: z.string(),
  scope_ref: z.string().nullable(),
  group_key: json,
  queue_length: z.number().int(),
  active_count: z.number().int(),
  threshold: z.number().int().nullable(),
  policy_ref: z.string().nullable(),
  oldest_enqueued_at: time.nullable(),
  total_admitted: z.number().int().nullable(),
  paused_until: time.nullable(),
  pause_reason: z.string().nullable(),
  blocked_by: id.nullable(),
  blocked_reason: z.string().nullable(),
  next_retry_at: time.nullable(),
}).meta({ id: 'Lane', description: 'A row of the view usher.lane_stats.' });

export const policySchema = z.object({
  id,
  ref: z.string(),
  description: z.string().nullable(),
  enabled: z.boolean(),
  priority: z.number().int(),
  scope: z.discriminatedUnion('type', [
    z.object({ type: z.literal('global') }),
    z.object({ type: z.literal('pack'), pack_ref: z.string() }),
    z.object({ type: z.literal('action'), action_ref: z.string() }),
  ]),
  concurrency: z.object({
    limit: z.number().int().nullable(),
    method: z.enum(['enqueue', 'cancel']),
    parameters: z.array(z.string()),
  }),
  rate_limit: z.object({ max_executions: z.number().int(), window_seconds: z.number().int() }).nullable(),
  quotas: z.array(z.object({ quota_type: z.enum(['running_executions', 'executions_total']), limit: z.number().int() })),
  on_failure: z.enum(['wait', 'block', 'skip']),
  max_queue_length: z.number().int(),
  queue_timeout_seconds: z.number().int().nullable(),
  created_at: time,
  updated_at: time,
}).meta({ id: 'Policy', description: 'A row of usher.policies, shaped as the request body that writes it.' });

export const scheduleSchema = z.object({
  id,
  ref: z.string(),
  description: z.string().nullable(),
  action_ref: z.string(),
  cron: z.string(),
  timezone: z.string(),
  params: z.record(z.string(), json),
  enabled: z.boolean(),
  max_backfill: z.number().int(),
  next_tick_at: time.nullable().meta({ description: 'The next tick due; null until an executor has computed it (after a create or a change of cron, timezone or enabled).' }),
  last_tick_at: time.nullable().meta({ description: 'The latest tick that fired (its nominal time).' }),
  error: z.string().nullable().meta({ description: 'Why the executor cannot compute ticks; the schedule is skipped while set.' }),
  created_at: time,
  updated_at: time,
}).meta({ id: 'Schedule', description: 'A row of usher.schedules.' });

export const workerSchema = z.object({
  id,
  name: z.string(),
  host: z.string(),
  pid: z.number().int(),
  status: z.enum(['active', 'stopped', 'lost']),
  actions: z.array(z.string()),
  concurrency: z.number().int(),
  started_at: time,
  heartbeat_at: time,
  stopped_at: time.nullable(),
  heartbeat_age_seconds: z.number().meta({ description: 'Seconds since heartbeat_at, by the database clock.' }),
  running_count: z.number().int().meta({ description: 'Executions it holds a lease on now (running or canceling).' }),
}).meta({ id: 'Worker', description: 'A row of usher.workers, with heartbeat age and running count.' });

export const healthSchema = z.object({ status: z.literal('ok') }).meta({ id: 'Health' });

export const readySchema = z.object({
  status: z.literal('ready'),
  database: z.literal('reachable'),
  schema_version: z.string().nullable().meta({ description: 'Newest migration, applied.' }),
}).meta({ id: 'Ready' });
