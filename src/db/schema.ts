/** Row types of Usher's tables and views, for Kysely (typed reads outside the hot path). */
import type { ColumnType, Generated } from 'kysely';

type Timestamp = ColumnType<Date, never, never>;
type Json = ColumnType<unknown, string, string>;

export const executionStatuses = [
  'delayed', 'requested', 'scheduled', 'running', 'canceling',
  'completed', 'failed', 'cancelled', 'timeout', 'abandoned',
] as const;
export type ExecutionStatus = (typeof executionStatuses)[number];
export const terminalStatuses: readonly ExecutionStatus[] = ['completed', 'failed', 'cancelled', 'timeout', 'abandoned'];

export interface ExecutionsTable {
  id: Generated<string>;
  action_ref: string;
  params: Json;
  status: Generated<ExecutionStatus>;
  lane_key: string | null;
  queue_position: string | null;
  queued_at: Timestamp | null;
  run_at: ColumnType<Date | null, Date | string | null, never>;
  max_retries: number | null;
  idempotency_key: string | null;
  result: Json | null;
  error: string | null;
  timeout_seconds: number | null;
  attempt: Generated<number>;
  worker_id: string | null;
  lease_token: string | null;
  lease_expires_at: Timestamp | null;
  enforcement_id: string | null;
  parent_id: string | null;
  created_at: Timestamp;
  scheduled_at: Timestamp | null;
  started_at: Timestamp | null;
  completed_at: Timestamp | null;
  updated_at: Timestamp;
}

export interface ActionsTable {
  ref: string;
  pack_ref: ColumnType<string, never, never>;
  description: string | null;
  enabled: Generated<boolean>;
  timeout_seconds: Generated<number>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface QueueStatsView {
  action_ref: string;
  queue_length: string;
  active_count: string;
  max_concurrent: number | null;
  oldest_enqueued_at: Date | null;
  total_enqueued: string;
  total_completed: string;
  last_updated: Date;
  paused: boolean;
  delayed_count: string;
}

export interface LaneStatsView {
  lane_key: string;
  scope: string;
  scope_ref: string | null;
  group_key: unknown;
  queue_length: string;
  active_count: number;
  threshold: number | null;
  policy_ref: string | null;
  oldest_enqueued_at: Date | null;
  total_admitted: string | null;
  paused_until: Date | null;
  pause_reason: string | null;
  blocked_by: string | null;
  blocked_reason: string | null;
  next_retry_at: Date | null;
}

export interface WorkersTable {
  id: Generated<string>;
  name: string;
  host: string;
  pid: number;
  actions: string[];
  concurrency: number;
  status: 'active' | 'stopped' | 'lost';
  started_at: Timestamp;
  heartbeat_at: Timestamp;
  stopped_at: Timestamp | null;
}

export interface UsherDatabase {
  'usher.executions': ExecutionsTable;
  'usher.actions': ActionsTable;
  'usher.queue_stats': QueueStatsView;
  'usher.lane_stats': LaneStatsView;
  'usher.workers': WorkersTable;
}
