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
