/** Reads for people and tests: typed with Kysely, off the hot path. */
import type { UsherKysely } from '../db/kysely.ts';
import type { Queryable } from '../db/pool.ts';

export function queueStats(db: UsherKysely) {
  return db.selectFrom('usher.queue_stats').selectAll().orderBy('action_ref').execute();
}

export function laneStats(db: UsherKysely) {
  return db.selectFrom('usher.lane_stats').selectAll().orderBy('lane_key').execute();
}

export function getExecution(db: UsherKysely, id: string) {
  return db.selectFrom('usher.executions').selectAll().where('id', '=', id).executeTakeFirst();
}

export interface InvariantViolation {
  lane_key: string;
  problem: 'slot_count_mismatch' | 'over_threshold' | 'admitted_past_older_waiting';
  detail: string;
}

/** Runs usher.check_invariants(): empty when every slot counter and lane order is as it must be. */
export async function checkInvariants(db: Queryable): Promise<InvariantViolation[]> {
  const result = await db.query<InvariantViolation>('select lane_key, problem, detail from usher.check_invariants()');
  return result.rows;
}
