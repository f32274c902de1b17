/** Cron schedules for the HTTP API: rows of usher.schedules, read, created, replaced and deleted. */
import pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import { SqlState } from '../errors.ts';
import { selectPage, SqlValues, type PageOf, type PageRequest } from './paging.ts';
import { deleteByRef, findByRef, writeByRef, type RefTable } from './rows-by-ref.ts';

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
const schedulesTable: RefTable<keyof typeof writableColumns> = {
  table: 'usher.schedules', alias: 's', refConstraint: 'schedules_ref_unique', writable: writableColumns, selectList: selectList('s'),
};

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
  try {
    const { row: schedule, created } = await writeByRef<ScheduleRecord, keyof typeof writableColumns>(db, schedulesTable, ref, columns, true);
    return { outcome: 'written', schedule, created };
  } catch (error) {
    if (error instanceof pg.DatabaseError && error.code === SqlState.foreignKeyViolation) return { outcome: 'unknown_action' };
    if (error instanceof pg.DatabaseError && error.code === SqlState.checkViolation && error.constraint) {
      return { outcome: 'refused', constraint: error.constraint };
    }
    throw error;
  }
}

export const findSchedule = (db: Queryable, ref: string): Promise<ScheduleRecord | undefined> => findByRef(db, schedulesTable, ref);

export const deleteSchedule = (db: Queryable, ref: string): Promise<ScheduleRecord | undefined> => deleteByRef(db, schedulesTable, ref);

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
