/** Cron schedules for the HTTP API: rows of usher.schedules, read, created, replaced and deleted. */
import pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import { SqlState } from '../errors.ts';
import { selectPage, SqlValues, type PageOf, type PageRequest } from './paging.ts';

export interface ScheduleRecord {
  id: string;
  ref: string;
  description: string | null;
  action_ref: string;
  cron: string;
  timezone: string;
  params: Record<string, unknown>;
  enabled: boolean;
  max_backfill: number;
  next_tick_at: Date | null;
  last_tick_at: Date | null;
  error: string | null;
  created_at: Date;
  updated_at: Date;
}

/** Every column a caller writes, with its SQL type; a column left undefined takes its default. */
const writableColumns = {
  description: 'text',
  action_ref: 'text',
  cron: 'text',
  timezone: 'text',
  params: 'jsonb',
  enabled: 'boolean',
  max_backfill: 'integer',
} as const;

type Writable = Pick<ScheduleRecord, keyof typeof writableColumns>;
/** A whole schedule as written: every column, or undefined for the column's default. */
export type ScheduleColumns = { readonly [K in keyof Writable]: Writable[K] | undefined };

const columnNames = Object.keys(writableColumns) as (keyof typeof writableColumns)[];
const selectList = (alias: string) => ['id', 'ref', ...columnNames, 'next_tick_at', 'last_tick_at', 'error', 'created_at', 'updated_at']
  .map((column) => `${alias}.${column}`).join(', ');

export type ScheduleWriteOutcome =
  | { readonly outcome: 'written'; readonly schedule: ScheduleRecord; readonly created: boolean }
  | { readonly outcome: 'unknown_action' }
  /** A CHECK constraint (or the trigger's time zone check) refused it. */
  | { readonly outcome: 'refused'; readonly constraint: string };

/**
 * Creates the schedule, or replaces an existing one of the same ref whole (id, created_at and the
 * ticks already fired stay). The table's trigger starts a changed cron, time zone or re-enabled
 * schedule afresh from the next tick after now.
 */
export async function putSchedule(db: Queryable, ref: string, columns: ScheduleColumns): Promise<ScheduleWriteOutcome> {
  const sql = new SqlValues();
  const values = [sql.add(ref), ...columnNames.map((column) => {
    const value = columns[column];
    if (value === undefined) return 'default';
    return sql.add(column === 'params' ? JSON.stringify(value) : value, writableColumns[column]);
  })];
  try {
    const result = await db.query<ScheduleRecord & { created: boolean }>(
      `insert into usher.schedules as s (ref, ${columnNames.join(', ')})
       values (${values.join(', ')})
       on conflict on constraint schedules_ref_unique do update set ${columnNames.map((column) => `${column} = excluded.${column}`).join(', ')}
       returning ${selectList('s')}, (s.xmax = 0) as created`,
      sql.values,
    );
    const { created, ...schedule } = result.rows[0]!;
    return { outcome: 'written', schedule, created };
  } catch (error) {
    if (error instanceof pg.DatabaseError && error.code === SqlState.foreignKeyViolation) return { outcome: 'unknown_action' };
    if (error instanceof pg.DatabaseError && error.code === SqlState.checkViolation && error.constraint) {
      return { outcome: 'refused', constraint: error.constraint };
    }
    throw error;
  }
}

export async function findSchedule(db: Queryable, ref: string): Promise<ScheduleRecord | undefined> {
  const result = await db.query<ScheduleRecord>(`select ${selectList('s')} from usher.schedules s where s.ref = $1`, [ref]);
  return result.rows[0];
}

export async function deleteSchedule(db: Queryable, ref: string): Promise<ScheduleRecord | undefined> {
  const result = await db.query<ScheduleRecord>(`delete from usher.schedules s where s.ref = $1 returning ${selectList('s')}`, [ref]);
  return result.rows[0];
}

export interface ScheduleFilter {
  readonly action_ref?: string;
  readonly pack_ref?: string;
  readonly enabled?: boolean;
  /** Only schedules of actions of these packs (a token limited to packs); undefined: every pack. */
  readonly within_packs?: readonly string[];
}

/** Schedules by ref. */
export function listSchedules(db: Queryable, filter: ScheduleFilter, page: PageRequest): Promise<PageOf<ScheduleRecord>> {
  const sql = new SqlValues();
  const where: string[] = [];
  if (filter.action_ref !== undefined) where.push(`s.action_ref = ${sql.add(filter.action_ref)}`);
  if (filter.pack_ref !== undefined) where.push(`split_part(s.action_ref, '.', 1) = ${sql.add(filter.pack_ref)}`);
  if (filter.enabled !== undefined) where.push(`s.enabled = ${sql.add(filter.enabled, 'boolean')}`);
  if (filter.within_packs !== undefined) where.push(`split_part(s.action_ref, '.', 1) = any (${sql.add(filter.within_packs, 'text[]')})`);
  return selectPage<ScheduleRecord>(db, {
    select: selectList('s'), from: 'usher.schedules s', alias: 's', where, sql, page, order: (alias) => `${alias}.ref`,
  });
}
