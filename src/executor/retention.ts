/**
 * Retention: deletes executions that ended more than USHER_RETENTION_DAYS ago, and API audit rows
 * older than USHER_AUDIT_RETENTION_DAYS, in batches of their own transactions, so a large backlog
 * never holds locks or bloats one transaction, and a pass is bounded so the sweep it rides on
 * keeps its rhythm.
 */
import type { Queryable } from '../db/pool.ts';
import type { Logger } from '../log.ts';
import { deleteDepartedWorkers, deleteFinishedExecutions, deleteOldAuditRows } from '../queue/executor-calls.ts';

export const RETENTION_BATCH_SIZE = 1000;
const MAX_BATCHES_PER_PASS = 20;
/** How often a pass runs; the first runs on the executor's first sweep. */
export const RETENTION_INTERVAL_MS = 60_000;

/** Runs one batch of deletions after another until a batch comes back short, at most MAX_BATCHES_PER_PASS; the total deleted. */
async function deleteInBatches(deleteBatch: (batchSize: number) => Promise<number>): Promise<number> {
  let deleted = 0;
  for (let batch = 0; batch < MAX_BATCHES_PER_PASS; batch += 1) {
    const count = await deleteBatch(RETENTION_BATCH_SIZE);
    deleted += count;
    if (count < RETENTION_BATCH_SIZE) break;
  }
  return deleted;
}

export async function deleteExpiredExecutions(db: Queryable, retentionDays: number, log: Logger): Promise<number> {
  const deleted = await deleteInBatches((batchSize) => deleteFinishedExecutions(db, retentionDays * 86_400, batchSize));
  if (deleted > 0) log.info({ event: 'retention:deleted', count: deleted, retention_days: retentionDays }, 'deleted ended executions past retention');
  const workers = await deleteDepartedWorkers(db, retentionDays * 86_400);
  if (workers > 0) log.info({ event: 'retention:workers_deleted', count: workers, retention_days: retentionDays }, 'deleted rows of workers gone longer than the retention');
  return deleted;
}

/** Deletes rows of usher.api_audit_log older than USHER_AUDIT_RETENTION_DAYS, a bounded number of batches a pass. */
export async function deleteExpiredAuditRows(db: Queryable, retentionDays: number, log: Logger): Promise<number> {
  const deleted = await deleteInBatches((batchSize) => deleteOldAuditRows(db, retentionDays * 86_400, batchSize));
  if (deleted > 0) log.info({ event: 'retention:audit_deleted', count: deleted, retention_days: retentionDays }, 'deleted API audit rows past their retention');
  return deleted;
}
