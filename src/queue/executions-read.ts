/**
 * Reads of executions for the HTTP API: one by id, filtered pages newest first, and counts by status.
 * Rows carry every column a caller may see; the lease token (the fencing secret of a running attempt)
 * and the internal quota bookkeeping (scope_counted) are left out.
 */
import type { ExecutionStatus } from '../db/schema.ts';
import type { Queryable } from '../db/pool.ts';
import type { Execution } from './types.ts';
import { splitTotal, SqlValues, whereClause, type PageOf, type PageRequest } from './paging.ts';

export const executionColumns = [
  'id', 'action_ref', 'params', 'status', 'lane_key', 'queue_position', 'queued_at', 'run_at', 'max_retries',
  'idempotency_key', 'result', 'error', 'timeout_seconds', 'attempt', 'worker_id', 'lease_expires_at',
  'enforcement_id', 'parent_id', 'schedule_id', 'schedule_tick', 'created_at', 'scheduled_at', 'started_at',
  'completed_at', 'updated_at',
] as const;

export type ExecutionColumn = (typeof executionColumns)[number];

/** An execution as the API shows it: every column but the lease token and the quota bookkeeping. */
export type ExecutionRecord = Omit<Execution, 'lease_token' | 'scope_counted'>;

const selectList = (alias: string) => executionColumns.map((column) => `${alias}.${column}`).join(', ');

/** Keeps only the columns of ExecutionRecord (e.g. of a `returning *` row). */
export function toExecutionRecord(row: Record<string, unknown>): ExecutionRecord {
  return Object.fromEntries(executionColumns.map((column) => [column, row[column] ?? null])) as unknown as ExecutionRecord;
}

export async function findExecution(db: Queryable, id: string): Promise<ExecutionRecord | undefined> {
  const result = await db.query<ExecutionRecord>(`select ${selectList('e')} from usher.executions e where e.id = $1`, [id]);
  return result.rows[0];
}

export interface ExecutionFilter {
  readonly statuses?: readonly ExecutionStatus[];
  readonly action_ref?: string;
  /** Executions of every action of these packs (each must hold: two different packs match nothing). */
  readonly pack_refs?: readonly string[];
  /** Executions of the actions of any of these packs (a token limited to packs). */
  readonly within_packs?: readonly string[];
  readonly enforcement_id?: string;
  readonly parent_id?: string;
  /** Strictly after / before these instants (ISO 8601). */
  readonly created_after?: string;
  readonly created_before?: string;
  /** Keyset cursor: only executions with a smaller id (the last id of the previous page). */
  readonly before_id?: string;
}

function conditions(filter: ExecutionFilter, sql: SqlValues): string[] {
  const where: string[] = [];
  if (filter.statuses && filter.statuses.length > 0) where.push(`e.status = any(${sql.add(filter.statuses, 'text[]')})`);
  if (filter.action_ref !== undefined) where.push(`e.action_ref = ${sql.add(filter.action_ref)}`);
  // Through the actions of the pack, so executions_by_action_status serves each of them.
  for (const pack of filter.pack_refs ?? []) {
    where.push(`e.action_ref in (select a.ref from usher.actions a where a.pack_ref = ${sql.add(pack)})`);
  }
  if (filter.within_packs !== undefined) {
    where.push(`e.action_ref in (select a.ref from usher.actions a where a.pack_ref = any(${sql.add(filter.within_packs, 'text[]')}))`);
  }
  if (filter.enforcement_id !== undefined) where.push(`e.enforcement_id = ${sql.add(filter.enforcement_id, 'bigint')}`);
  if (filter.parent_id !== undefined) where.push(`e.parent_id = ${sql.add(filter.parent_id, 'bigint')}`);
  if (filter.created_after !== undefined) where.push(`e.created_at > ${sql.add(filter.created_after, 'timestamptz')}`);
  if (filter.created_before !== undefined) where.push(`e.created_at < ${sql.add(filter.created_before, 'timestamptz')}`);
  if (filter.before_id !== undefined) where.push(`e.id < ${sql.add(filter.before_id, 'bigint')}`);
  return where;
}

/**
 * A page of executions, newest (highest id) first, and the number of all that match.
 *
 * Deep pages stay cheap because the page is found on ids alone and only its rows are read in full
 * (a "deferred join"): `page_ids` walks the primary key backwards, skipping (page - 1) * per_page
 * ids — an index-only scan of executions_pkey when there is no filter, so a skipped execution costs
 * an index entry, never its params or result. With filters, the skipped rows are only checked, not
 * fetched into the result. `before_id` makes it a true keyset read: `id < before_id` starts the
 * backward scan at that id, so walking all pages by passing the last id seen costs per_page index
 * entries per page however deep it goes. total_items is a count(*) over the same filter, in the
 * same statement (one snapshot).
 */
export async function listExecutions(db: Queryable, filter: ExecutionFilter, page: PageRequest): Promise<PageOf<ExecutionRecord>> {
  const sql = new SqlValues();
  const where = whereClause(conditions(filter, sql));
  const limit = sql.add(page.per_page, 'bigint');
  const offset = sql.add((page.page - 1) * page.per_page, 'bigint');
  const result = await db.query<ExecutionRecord & { total_items: number }>(
    `with matching as (
       select count(*)::float8 as total_items from usher.executions e ${where}
     ),
     page_ids as (
       select e.id from usher.executions e ${where} order by e.id desc limit ${limit} offset ${offset}
     )
     select m.total_items, r.*
     from matching m
     left join lateral (
       select ${selectList('e')} from page_ids p join usher.executions e on e.id = p.id
     ) r on true
     order by r.id desc`,
    sql.values,
  );
  return splitTotal(result.rows);
}

/** Counts by status; pending = delayed + requested + scheduled, running includes canceling. */
export interface ExecutionCounts {
  total: number;
  completed: number;
  failed: number;
  running: number;
  pending: number;
  cancelled: number;
  timeout: number;
  abandoned: number;
}

/** Counts of every execution, or of those of the given packs' actions. */
export async function countExecutions(db: Queryable, withinPacks?: readonly string[]): Promise<ExecutionCounts> {
  const result = await db.query<ExecutionCounts>(
    `with by_status as (
       select e.status, count(*)::float8 as n from usher.executions e
       where $1::text[] is null or e.action_ref in (select a.ref from usher.actions a where a.pack_ref = any($1::text[]))
       group by e.status
     )
     select
       coalesce(sum(n), 0)::float8 as total,
       coalesce(sum(n) filter (where status = 'completed'), 0)::float8 as completed,
       coalesce(sum(n) filter (where status = 'failed'), 0)::float8 as failed,
       coalesce(sum(n) filter (where status in ('running', 'canceling')), 0)::float8 as running,
       coalesce(sum(n) filter (where status in ('delayed', 'requested', 'scheduled')), 0)::float8 as pending,
       coalesce(sum(n) filter (where status = 'cancelled'), 0)::float8 as cancelled,
       coalesce(sum(n) filter (where status = 'timeout'), 0)::float8 as timeout,
       coalesce(sum(n) filter (where status = 'abandoned'), 0)::float8 as abandoned
     from by_status`,
    [withinPacks ?? null],
  );
  return result.rows[0]!;
}
