/** Operator controls of one FIFO lane for the HTTP API: pause until a time, resume, unblock. */
import type { Queryable } from '../db/pool.ts';
import { laneList, type LaneRecord } from './action-stats.ts';

/** The lane as usher.lane_stats shows it; undefined when it has neither a row nor waiting executions. */
export async function findLane(db: Queryable, laneKey: string): Promise<LaneRecord | undefined> {
  const { rows } = await db.query<LaneRecord>(`select ${laneList('l')} from usher.lane_stats l where l.lane_key = $1`, [laneKey]);
  return rows[0];
}

async function controlKnownLane(db: Queryable, laneKey: string, sql: string, values: unknown[]): Promise<LaneRecord | undefined> {
  if (!(await findLane(db, laneKey))) return undefined;
  await db.query(sql, values);
  return findLane(db, laneKey);
}

export function pauseLane(db: Queryable, laneKey: string, until: string, reason: string | null): Promise<LaneRecord | undefined> {
  return controlKnownLane(db, laneKey, 'select usher.pause_lane($1, $2, $3)', [laneKey, until, reason]);
}

export function resumeLane(db: Queryable, laneKey: string): Promise<LaneRecord | undefined> {
  return controlKnownLane(db, laneKey, 'select usher.resume_lane($1)', [laneKey]);
}

export function unblockLane(db: Queryable, laneKey: string): Promise<LaneRecord | undefined> {
  return controlKnownLane(db, laneKey, 'select usher.unblock_lane($1)', [laneKey]);
}
