/** Operator retry of an ended execution, through usher.retry_execution. */
import pg from 'pg';
import type { ExecutionStatus } from '../db/schema.ts';
import type { Queryable } from '../db/pool.ts';
import { SqlState } from '../errors.ts';

export type RetryOutcome =
  | { readonly outcome: 'retried'; readonly status: ExecutionStatus }
  | { readonly outcome: 'not_found' }
  /** Only failed, timeout, abandoned and cancelled executions can be retried; `status` is the one it has. */
  | { readonly outcome: 'not_retryable'; readonly status: ExecutionStatus | undefined };

export async function retryExecution(db: Queryable, id: string): Promise<RetryOutcome> {
  try {
    const result = await db.query<{ status: ExecutionStatus }>('select status from usher.retry_execution($1)', [id]);
    const row = result.rows[0];
    return row ? { outcome: 'retried', status: row.status } : { outcome: 'not_found' };
  } catch (error) {
    if (!(error instanceof pg.DatabaseError) || error.code !== SqlState.objectNotInPrerequisiteState) throw error;
    const current = await db.query<{ status: ExecutionStatus }>('select status from usher.executions where id = $1', [id]);
    return { outcome: 'not_retryable', status: current.rows[0]?.status };
  }
}
