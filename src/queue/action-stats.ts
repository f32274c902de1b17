/** Queue and lane statistics of actions for the HTTP API, from the views usher.queue_stats and usher.lane_stats. */
import type { Queryable } from '../db/pool.ts';
import { selectPage, SqlValues, type PageOf, type PageRequest } from './paging.ts';

export interface QueueStatsRecord {
  action_ref: string;
  queue_length: number;
  active_count: number;
  max_concurrent: number | null;
  oldest_enqueued_at: Date | null;
  total_enqueued: number;
  total_completed: number;
  last_updated: Date;
}

// Counts are bigint in the view; they are shown as numbers (exact up to 2^53).
const queueStatsList = (alias: string) => `${alias}.action_ref, ${alias}.queue_length::float8 as queue_length,
  ${alias}.active_count::float8 as active_count, ${alias}.max_concurrent, ${alias}.oldest_enqueued_at,
  ${alias}.total_enqueued::float8 as total_enqueued, ${alias}.total_completed::float8 as total_completed,
  ${alias}.last_updated`;

/** The row of one action; undefined for an unknown action. The filter on action_ref reaches inside the view's grouping. */
export async function findQueueStats(db: Queryable, actionRef: string): Promise<QueueStatsRecord | undefined> {
  const result = await db.query<QueueStatsRecord>(
    `select ${queueStatsList('q')} from usher.queue_stats q where q.action_ref = $1`, [actionRef]);
  return result.rows[0];
}

export function listQueueStats(db: Queryable, page: PageRequest): Promise<PageOf<QueueStatsRecord>> {
  return selectPage<QueueStatsRecord>(db, {
    select: queueStatsList('q'), from: 'usher.queue_stats q', alias: 'q', where: [], sql: new SqlValues(), page,
    order: (alias) => `${alias}.action_ref`,
  });
}

export interface LaneRecord {
  lane_key: string;
  scope: string;
  scope_ref: string | null;
  group_key: unknown;
  queue_length: number;
  active_count: number;
  threshold: number | null;
  policy_ref: string | null;
  oldest_enqueued_at: Date | null;
  total_admitted: number | null;
  paused_until: Date | null;
  pause_reason: string | null;
  blocked_by: string | null;
  blocked_reason: string | null;
  next_retry_at: Date | null;
}

export const laneList = (alias: string) => `${alias}.lane_key, ${alias}.scope, ${alias}.scope_ref, ${alias}.group_key,
  ${alias}.queue_length::float8 as queue_length, ${alias}.active_count, ${alias}.threshold, ${alias}.policy_ref,
  ${alias}.oldest_enqueued_at, ${alias}.total_admitted::float8 as total_admitted, ${alias}.paused_until,
  ${alias}.pause_reason, ${alias}.blocked_by, ${alias}.blocked_reason, ${alias}.next_retry_at`;

/**
 * The lanes of an action: those of its own scope (`action:<ref>…`), and every lane in which one of
 * its executions waits or holds a slot (a pack or global lane it shares with other actions).
 */
export function listActionLanes(db: Queryable, actionRef: string, page: PageRequest): Promise<PageOf<LaneRecord>> {
  const sql = new SqlValues();
  const ref = sql.add(actionRef);
  return selectPage<LaneRecord>(db, {
    select: laneList('l'),
    from: 'usher.lane_stats l',
    alias: 'l',
    where: [`(
      (l.scope = 'action' and l.scope_ref = ${ref})
      or l.lane_key in (
        select e.lane_key from usher.executions e
        where e.action_ref = ${ref} and e.status in ('requested', 'scheduled', 'running', 'canceling') and e.lane_key is not null))`],
    sql,
    page,
    order: (alias) => `${alias}.lane_key`,
  });
}
