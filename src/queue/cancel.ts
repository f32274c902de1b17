import type { Queryable } from '../db/pool.ts';
import { UsherError } from '../errors.ts';
import type { ExecutionStatus } from '../db/schema.ts';

export interface CancelResult {
  id: string;
  /** Status after the call: cancelled, canceling (a worker is stopping it), or the terminal status it already had. */
  status: ExecutionStatus;
  /** False when the execution had already ended, so nothing changed. */
  changed: boolean;
}

/** Cancels an execution in whatever state it is. Throws execution_not_found for an unknown id. */
export async function cancelExecution(db: Queryable, id: string, reason?: string): Promise<CancelResult> {
  const result = await db.query<CancelResult>('select id, status, changed from usher.cancel_execution($1, $2)', [id, reason ?? null]);
  const row = result.rows[0];
  if (!row) throw new UsherError('execution_not_found', `no execution with id ${id}`);
  return row;
}

/**
 * Purges an action's queue: cancels every execution of it that has not started (delayed, waiting
 * or admitted) and was enqueued before this call, in transactions of `batchSize`
 * (usher.cancel_waiting), and returns how many. Running executions are left alone; executions
 * enqueued meanwhile are kept.
 */
export async function cancelWaiting(db: Queryable, actionRef: string, reason?: string, batchSize = 1000): Promise<number> {
  const { rows: [bound] } = await db.query<{ id: string | null }>(
    `select max(e.id)::text as id from usher.executions e where e.action_ref = $1 and e.status in ('delayed', 'requested', 'scheduled')`,
    [actionRef]);
  if (!bound?.id) return 0;
  let cancelled = 0;
  for (;;) {
    const { rows: [batch] } = await db.query<{ n: number }>(
      'select usher.cancel_waiting($1, $2, $3, $4) as n', [actionRef, reason ?? null, batchSize, bound.id]);
    if (!batch || batch.n === 0) return cancelled;
    cancelled += batch.n;
  }
}
