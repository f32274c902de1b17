/** The executor's side of the queue: admission and the sweeps that keep time. */
import type { Queryable } from '../db/pool.ts';

/** Admits into every lane that can take more, one lane per transaction (a procedure that commits). */
export async function admitQueued(db: Queryable): Promise<{ lanes_visited: number; admitted: number }> {
  const result = await db.query<{ lanes_visited: number; admitted: number }>('call usher.admit_queued()');
  return result.rows[0] ?? { lanes_visited: 0, admitted: 0 };
}

/** Ends running executions whose lease expired or that overran their timeout by more than the grace. */
export async function expireRunningExecutions(db: Queryable, timeoutGraceSeconds: number): Promise<number> {
  const result = await db.query<{ n: number }>('select usher.expire_running_executions($1) as n', [timeoutGraceSeconds]);
  return result.rows[0]?.n ?? 0;
}

export async function markLostWorkers(db: Queryable, silentSeconds: number): Promise<number> {
  const result = await db.query<{ n: number }>('select usher.mark_lost_workers($1) as n', [silentSeconds]);
  return result.rows[0]?.n ?? 0;
}

export async function deleteIdleLanes(db: Queryable, idleSeconds: number): Promise<number> {
  const result = await db.query<{ n: number }>('select usher.delete_idle_lanes($1) as n', [idleSeconds]);
  return result.rows[0]?.n ?? 0;
}

/**
 * Drops events of the stream's log older than the retention, a batch per transaction; at most
 * `maxBatches` a call, so the sweep it rides on keeps its rhythm after a long backlog.
 */
export async function deleteOldExecutionEvents(db: Queryable, keepSeconds: number, maxBatches = 20): Promise<number> {
  let total = 0;
  for (let batch = 0; batch < maxBatches; batch += 1) {
    const result = await db.query<{ n: number }>('select usher.delete_old_execution_events($1) as n', [keepSeconds]);
    const deleted = result.rows[0]?.n ?? 0;
    total += deleted;
    if (deleted === 0) break;
  }
  return total;
}

/** Delayed executions whose run_at has come join their lanes. */
export async function releaseDueDelayed(db: Queryable): Promise<number> {
  const result = await db.query<{ n: number }>('select usher.release_due_delayed() as n');
  return result.rows[0]?.n ?? 0;
}

export async function cancelOverdueWaiting(db: Queryable): Promise<number> {
  const result = await db.query<{ n: number }>('select usher.cancel_overdue_waiting() as n');
  return result.rows[0]?.n ?? 0;
}

/** Milliseconds until usher.next_wakeup_at(), by the database clock; null when nothing is due. */
export async function msUntilNextWakeup(db: Queryable): Promise<number | null> {
  // greatest() skips nulls, so "nothing due" must stay null explicitly: a 0 here made the executor
  // run an admission pass back to back whenever nothing was due.
  const result = await db.query<{ ms: number | null }>(
    `select case when w.at is not null then greatest(0, ceil(extract(epoch from w.at - clock_timestamp()) * 1000))::float8 end as ms
     from (select usher.next_wakeup_at() as at) w`,
  );
  return result.rows[0]?.ms ?? null;
}

/** Rows of workers that stopped or were lost more than `olderThanSeconds` ago. */
export async function deleteDepartedWorkers(db: Queryable, olderThanSeconds: number): Promise<number> {
  const result = await db.query<{ n: number }>('select usher.delete_departed_workers(make_interval(secs => $1)) as n', [olderThanSeconds]);
  return result.rows[0]?.n ?? 0;
}

/** Retention of the API's audit log: deletes one batch of rows older than `olderThanSeconds`. */
export async function deleteOldAuditRows(db: Queryable, olderThanSeconds: number, batchSize: number): Promise<number> {
  const result = await db.query<{ n: number }>(
    'select usher.delete_old_audit_rows(make_interval(secs => $1), $2) as n', [olderThanSeconds, batchSize]);
  return result.rows[0]?.n ?? 0;
}

/** Retention: deletes one batch of executions that ended more than `olderThanSeconds` ago. */
export async function deleteFinishedExecutions(db: Queryable, olderThanSeconds: number, batchSize: number): Promise<number> {
  const result = await db.query<{ n: number }>(
    'select usher.delete_finished_executions(make_interval(secs => $1), $2) as n', [olderThanSeconds, batchSize]);
  return result.rows[0]?.n ?? 0;
}
