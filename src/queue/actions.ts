/** Actions for the HTTP API: list, read, create or change, delete, pause and resume. */
import pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import { SqlState } from '../errors.ts';
import { selectPage, SqlValues, type PageOf, type PageRequest } from './paging.ts';

export interface ActionRecord {
  ref: string;
  pack_ref: string;
  description: string | null;
  enabled: boolean;
  timeout_seconds: number;
  max_retries: number;
  retry_delay_seconds: number;
  retry_backoff_factor: number;
  retry_max_delay_seconds: number;
  retry_jitter: number;
  paused_at: Date | null;
  pause_reason: string | null;
  created_at: Date;
  updated_at: Date;
}

/** The settable columns of an action and their SQL types; names come only from here. */
export const actionSettings = {
  description: 'text',
  enabled: 'boolean',
  timeout_seconds: 'integer',
  max_retries: 'integer',
  retry_delay_seconds: 'numeric',
  retry_backoff_factor: 'numeric',
  retry_max_delay_seconds: 'numeric',
  retry_jitter: 'numeric',
} as const;

export type ActionSettings = {
  -readonly [K in keyof typeof actionSettings]?: K extends 'description' ? string | null
    : K extends 'enabled' ? boolean : number;
};

// numeric columns arrive from pg as strings; the API shows numbers.
const selectList = (alias: string) => `${alias}.ref, ${alias}.pack_ref, ${alias}.description, ${alias}.enabled,
  ${alias}.timeout_seconds, ${alias}.max_retries, ${alias}.retry_delay_seconds::float8 as retry_delay_seconds,
  ${alias}.retry_backoff_factor::float8 as retry_backoff_factor,
  ${alias}.retry_max_delay_seconds::float8 as retry_max_delay_seconds, ${alias}.retry_jitter::float8 as retry_jitter,
  ${alias}.paused_at, ${alias}.pause_reason, ${alias}.created_at, ${alias}.updated_at`;

/** Statuses of executions that have not ended: an action with any of them cannot be deleted. */
export const unfinishedStatuses = ['delayed', 'requested', 'scheduled', 'running', 'canceling'] as const;

/** Actions by ref; `within_packs` (a token limited to packs) keeps those of these packs only. */
export function listActions(
  db: Queryable, filter: { pack_ref?: string; within_packs?: readonly string[] }, page: PageRequest,
): Promise<PageOf<ActionRecord>> {
  const sql = new SqlValues();
  const where = filter.pack_ref === undefined ? [] : [`a.pack_ref = ${sql.add(filter.pack_ref)}`];
  if (filter.within_packs !== undefined) where.push(`a.pack_ref = any(${sql.add(filter.within_packs, 'text[]')})`);
  return selectPage<ActionRecord>(db, {
    select: selectList('a'), from: 'usher.actions a', alias: 'a', where, sql, page, order: (alias) => `${alias}.ref`,
  });
}

export async function findAction(db: Queryable, ref: string): Promise<ActionRecord | undefined> {
  const result = await db.query<ActionRecord>(`select ${selectList('a')} from usher.actions a where a.ref = $1`, [ref]);
  return result.rows[0];
}

/** Whether each of these actions is enabled, by ref; refs without an action are absent. */
export async function enabledByRef(db: Queryable, refs: readonly string[]): Promise<Map<string, boolean>> {
  const { rows } = await db.query<{ ref: string; enabled: boolean }>(
    'select a.ref, a.enabled from usher.actions a where a.ref = any($1::text[])', [[...new Set(refs)]]);
  return new Map(rows.map((row) => [row.ref, row.enabled]));
}

/**
 * Creates the action, or changes the settings given on an existing one; settings left out keep their
 * value (a new action takes the column defaults). `created` tells which happened.
 */
export async function putAction(db: Queryable, ref: string, settings: ActionSettings): Promise<{ action: ActionRecord; created: boolean }> {
  const sql = new SqlValues();
  const refValue = sql.add(ref);
  const columns = (Object.keys(actionSettings) as (keyof typeof actionSettings)[]).filter((column) => settings[column] !== undefined);
  const values = columns.map((column) => sql.add(settings[column], actionSettings[column]));
  const onConflict = columns.length === 0
    ? 'do nothing'
    : `do update set ${columns.map((column) => `${column} = excluded.${column}`).join(', ')}`;
  const result = await db.query<{ ref: string; created: boolean }>(
    `insert into usher.actions as a (ref${columns.map((column) => `, ${column}`).join('')})
     values (${[refValue, ...values].join(', ')})
     on conflict (ref) ${onConflict}
     returning a.ref, (a.xmax = 0) as created`,
    sql.values,
  );
  const action = await findAction(db, ref);
  if (!action) throw new Error(`action ${ref} vanished right after it was written`);
  return { action, created: result.rows[0]?.created ?? false };
}

export type DeleteActionOutcome =
  | { readonly outcome: 'deleted'; readonly action: ActionRecord }
  | { readonly outcome: 'not_found' }
  | { readonly outcome: 'busy'; readonly unfinished: number }
  /** A transaction that inserted executions of the action was still open after the lock timeout. */
  | { readonly outcome: 'enqueue_open' };

/**
 * Deletes an action (its policies and schedules go with it) unless executions of it are waiting or
 * running. It first waits (up to lockTimeoutMs) for transactions that are inserting executions of
 * the action (they hold usher.action_lock_key shared), so their executions are counted too; new
 * inserts wait for the delete and then find the action gone.
 */
export async function deleteAction(pool: pg.Pool, ref: string, { lockTimeoutMs = 5_000 } = {}): Promise<DeleteActionOutcome> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query(`select set_config('lock_timeout', $1, true)`, [`${lockTimeoutMs}ms`]);
    try {
      await client.query('select pg_advisory_xact_lock(usher.action_lock_key($1))', [ref]);
    } catch (error) {
      if (error instanceof pg.DatabaseError && error.code === SqlState.lockNotAvailable) {
        await client.query('rollback');
        return { outcome: 'enqueue_open' };
      }
      throw error;
    }
    const action = (await client.query<ActionRecord>(`select ${selectList('a')} from usher.actions a where a.ref = $1 for update`, [ref])).rows[0];
    if (!action) {
      await client.query('rollback');
      return { outcome: 'not_found' };
    }
    const counted = await client.query<{ n: number }>(
      'select count(*)::float8 as n from usher.executions e where e.action_ref = $1 and e.status = any($2::text[])',
      [ref, unfinishedStatuses],
    );
    const unfinished = counted.rows[0]?.n ?? 0;
    if (unfinished > 0) {
      await client.query('rollback');
      return { outcome: 'busy', unfinished };
    }
    await client.query('delete from usher.actions a where a.ref = $1', [ref]);
    await client.query('commit');
    return { outcome: 'deleted', action };
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** usher.pause_action / usher.resume_action; undefined for an unknown action. */
export async function pauseAction(db: Queryable, ref: string, reason: string | null): Promise<ActionRecord | undefined> {
  return operatorCall(db, ref, () => db.query('select usher.pause_action($1, $2)', [ref, reason]));
}

export async function resumeAction(db: Queryable, ref: string): Promise<ActionRecord | undefined> {
  return operatorCall(db, ref, () => db.query('select usher.resume_action($1)', [ref]));
}

async function operatorCall(db: Queryable, ref: string, call: () => Promise<unknown>): Promise<ActionRecord | undefined> {
  try {
    await call();
  } catch (error) {
    // no_data_found: the functions name an unknown action this way.
    if (error instanceof pg.DatabaseError && error.code === 'P0002') return undefined;
    throw error;
  }
  return findAction(db, ref);
}
