import type { ExecutionStatus } from '../db/schema.ts';

/** An execution row as Usher returns it: bigint ids as strings, timestamps as Dates. */
export interface Execution {
  id: string;
  action_ref: string;
  params: Record<string, unknown>;
  status: ExecutionStatus;
  lane_key: string | null;
  queue_position: string | null;
  queued_at: Date | null;
  run_at: Date | null;
  max_retries: number;
  idempotency_key: string | null;
  result: unknown;
  error: string | null;
  timeout_seconds: number;
  attempt: number;
  worker_id: string | null;
  lease_token: string | null;
  lease_expires_at: Date | null;
  enforcement_id: string | null;
  parent_id: string | null;
  /** Set on executions a cron schedule produced: the schedule and its tick. */
  schedule_id: string | null;
  schedule_tick: Date | null;
  /** Internal quota bookkeeping: counted in usher.scope_usage while it holds a slot. */
  scope_counted: boolean;
  created_at: Date;
  scheduled_at: Date | null;
  started_at: Date | null;
  completed_at: Date | null;
  updated_at: Date;
}

/** What a worker receives when it claims an execution. */
export interface ClaimedExecution {
  id: string;
  action_ref: string;
  params: Record<string, unknown>;
  attempt: number;
  lease_token: string;
  timeout_seconds: number;
}

/** Outcome of a worker's mark: the terminal status written, or null when the lease was no longer held. */
export type MarkResult = ExecutionStatus | null;
