/** Admission policies for the HTTP API: rows of usher.policies, read, created, replaced and deleted. */
import pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import { SqlState } from '../errors.ts';
import { selectPage, SqlValues, type PageOf, type PageRequest } from './paging.ts';
import { deleteByRef, findByRef, writeByRef, type RefTable } from './rows-by-ref.ts';

export interface PolicyQuota {
  quota_type: 'running_executions' | 'executions_total';
  limit: number;
}

export interface PolicyRecord {
  id: string;
  ref: string;
  description: string | null;
  action_ref: string | null;
  pack_ref: string | null;
  enabled: boolean;
  priority: number;
  threshold: number | null;
  method: 'enqueue' | 'cancel';
  parameters: string[];
  max_queue_length: number;
  rate_limit_max_executions: number | null;
  rate_limit_window_seconds: number | null;
  quotas: PolicyQuota[];
  queue_timeout_seconds: number | null;
  on_failure: 'wait' | 'block' | 'skip';
  created_at: Date;
  updated_at: Date;
}

/** Every writable column with its SQL type; a column left undefined takes its default. Names come only from here. */
const writableColumns = {
  description: 'text',
  action_ref: 'text',
  pack_ref: 'text',
  enabled: 'boolean',
  priority: 'integer',
  threshold: 'integer',
  method: 'text',
  parameters: 'text[]',
  max_queue_length: 'integer',
  rate_limit_max_executions: 'integer',
  rate_limit_window_seconds: 'integer',
  quotas: 'jsonb',
  queue_timeout_seconds: 'integer',
  on_failure: 'text',
} as const;

type Writable = Omit<PolicyRecord, 'id' | 'ref' | 'created_at' | 'updated_at'>;
/** A whole policy as written: every column, or undefined for the column's default. */
export type PolicyColumns = { readonly [K in keyof Writable]: Writable[K] | undefined };

const columnNames = Object.keys(writableColumns) as (keyof typeof writableColumns)[];
const selectList = (alias: string) => ['id', 'ref', ...columnNames, 'created_at', 'updated_at']
  .map((column) => `${alias}.${column}`).join(', ');
const policiesTable: RefTable<keyof typeof writableColumns> = {
  table: 'usher.policies', alias: 'p', refConstraint: 'policies_ref_unique', writable: writableColumns, selectList: selectList('p'),
};

export type PolicyWriteOutcome =
  | { readonly outcome: 'written'; readonly policy: PolicyRecord; readonly created: boolean }
  | { readonly outcome: 'exists' }
  | { readonly outcome: 'unknown_action' };

/** Inserts a policy; with `replace`, an existing policy of the same ref is replaced whole (id and created_at stay). */
export async function writePolicy(db: Queryable, ref: string, columns: PolicyColumns, replace: boolean): Promise<PolicyWriteOutcome> {
  try {
    const { row: policy, created } = await writeByRef<PolicyRecord, keyof typeof writableColumns>(db, policiesTable, ref, columns, replace);
    return { outcome: 'written', policy, created };
  } catch (error) {
    if (error instanceof pg.DatabaseError && error.code === '23505' && error.constraint === 'policies_ref_unique') return { outcome: 'exists' };
    if (error instanceof pg.DatabaseError && error.code === SqlState.foreignKeyViolation) return { outcome: 'unknown_action' };
    throw error;
  }
}

export const findPolicy = (db: Queryable, ref: string): Promise<PolicyRecord | undefined> => findByRef(db, policiesTable, ref);

export const deletePolicy = (db: Queryable, ref: string): Promise<PolicyRecord | undefined> => deleteByRef(db, policiesTable, ref);

export function listPolicies(db: Queryable, filter: { enabled?: boolean }, page: PageRequest): Promise<PageOf<PolicyRecord>> {
  const sql = new SqlValues();
  const where = filter.enabled === undefined ? [] : [`p.enabled = ${sql.add(filter.enabled, 'boolean')}`];
  return selectPage<PolicyRecord>(db, {
    select: selectList('p'), from: 'usher.policies p', alias: 'p', where, sql, page, order: (alias) => `${alias}.ref`,
  });
}

/**
 * Every policy that can govern an action: its own, its pack's and the global ones, enabled or not,
 * in the order usher.effective_policy picks them, so the first enabled one is the one in force.
 */
export function listPoliciesOfAction(db: Queryable, actionRef: string, page: PageRequest): Promise<PageOf<PolicyRecord>> {
  const sql = new SqlValues();
  const ref = sql.add(actionRef);
  return selectPage<PolicyRecord>(db, {
    select: selectList('p'),
    from: 'usher.policies p',
    alias: 'p',
    where: [`(p.action_ref = ${ref} or p.pack_ref = split_part(${ref}, '.', 1) or (p.action_ref is null and p.pack_ref is null))`],
    sql,
    page,
    order: (alias) => `(${alias}.action_ref is not null) desc, (${alias}.pack_ref is not null) desc, ${alias}.priority desc,
      ${alias}.created_at desc, ${alias}.id desc`,
  });
}

/** The policies of a pack's scope, then those of its actions (by action, in precedence order). */
export function listPoliciesOfPack(db: Queryable, packRef: string, page: PageRequest): Promise<PageOf<PolicyRecord>> {
  const sql = new SqlValues();
  const pack = sql.add(packRef);
  return selectPage<PolicyRecord>(db, {
    select: selectList('p'),
    from: 'usher.policies p',
    alias: 'p',
    where: [`(p.pack_ref = ${pack} or split_part(p.action_ref, '.', 1) = ${pack})`],
    sql,
    page,
    order: (alias) => `(${alias}.pack_ref is not null) desc, ${alias}.action_ref, ${alias}.priority desc, ${alias}.created_at desc, ${alias}.id desc`,
  });
}
