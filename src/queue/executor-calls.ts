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
