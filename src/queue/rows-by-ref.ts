/**
 * Tables whose rows are named by a unique `ref` and written whole by the HTTP API (policies,
 * schedules): insert or replace, read and delete by ref. Table, column and constraint names come
 * only from the calling module's constants; values always travel as parameters.
 */
import type { Queryable } from '../db/pool.ts';
import { SqlValues } from './paging.ts';

export interface RefTable<C extends string> {
  /** `usher.policies` */
  readonly table: string;
  readonly alias: string;
  /** The unique constraint on ref, for ON CONFLICT. */
  readonly refConstraint: string;
  /** Every column a caller writes, with its SQL type (jsonb values are sent as JSON text). */
  readonly writable: Readonly<Record<C, string>>;
  /** The columns answered, written against the alias. */
  readonly selectList: string;
}

/**
 * Inserts the row named `ref` (a column left undefined takes its default); with `replace`, an
 * existing row of that ref is replaced whole instead, keeping the columns not written (id,
 * created_at). `created` tells which happened.
 */
export async function writeByRef<R, C extends string>(
  db: Queryable, spec: RefTable<C>, ref: string, columns: { readonly [K in C]: unknown }, replace: boolean,
): Promise<{ row: R; created: boolean }> {
  const names = Object.keys(spec.writable) as C[];
  const sql = new SqlValues();
  const values = [sql.add(ref), ...names.map((column) => {
    const value = columns[column];
    if (value === undefined) return 'default';
    const type = spec.writable[column];
    return sql.add(type === 'jsonb' ? JSON.stringify(value) : value, type);
  })];
  const onConflict = replace
    ? `on conflict on constraint ${spec.refConstraint} do update set ${names.map((column) => `${column} = excluded.${column}`).join(', ')}`
    : '';
  const result = await db.query<R & { created: boolean }>(
    `insert into ${spec.table} as ${spec.alias} (ref, ${names.join(', ')})
     values (${values.join(', ')})
     ${onConflict}
     returning ${spec.selectList}, (${spec.alias}.xmax = 0) as created`,
    sql.values,
  );
  const { created, ...row } = result.rows[0]!;
  return { row: row as R, created };
}

export async function findByRef<R>(db: Queryable, spec: RefTable<string>, ref: string): Promise<R | undefined> {
  const result = await db.query<R & object>(`select ${spec.selectList} from ${spec.table} ${spec.alias} where ${spec.alias}.ref = $1`, [ref]);
  return result.rows[0];
}

export async function deleteByRef<R>(db: Queryable, spec: RefTable<string>, ref: string): Promise<R | undefined> {
  const result = await db.query<R & object>(
    `delete from ${spec.table} ${spec.alias} where ${spec.alias}.ref = $1 returning ${spec.selectList}`, [ref]);
  return result.rows[0];
}
