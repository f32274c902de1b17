/**
 * Paged reads for the HTTP API: one statement returns a page of rows and the number of all matching
 * rows, so both come from the same snapshot. Values always travel as parameters; the SQL text is
 * assembled only from constant fragments of the calling module.
 */
import type { Queryable } from '../db/pool.ts';

export interface PageRequest {
  /** 1-based page number. */
  readonly page: number;
  readonly per_page: number;
}

export interface PageOf<T> {
  readonly rows: T[];
  readonly total_items: number;
}

/** Collects the values of a statement and hands out their `$n` placeholders. */
export class SqlValues {
  readonly values: unknown[] = [];

  /** The placeholder of `value` (with an optional cast, e.g. `text[]`). */
  add(value: unknown, cast?: string): string {
    this.values.push(value);
    return cast ? `$${this.values.length}::${cast}` : `$${this.values.length}`;
  }
}

export interface PagedSelect {
  /** Column list, written against `alias`. */
  readonly select: string;
  /** Table or view with `alias`, e.g. `usher.actions a`. */
  readonly from: string;
  readonly where: readonly string[];
  /** ORDER BY of the page, written against a given alias (the inner one, then the result row's). */
  readonly order: (alias: string) => string;
  readonly alias: string;
  readonly sql: SqlValues;
  readonly page: PageRequest;
}

export function whereClause(conditions: readonly string[]): string {
  return conditions.length > 0 ? `where ${conditions.join(' and ')}` : '';
}

/** Runs a paged select: the rows of the page in order, and the count of every matching row. */
export async function selectPage<T>(db: Queryable, q: PagedSelect): Promise<PageOf<T>> {
  const where = whereClause(q.where);
  const limit = q.sql.add(q.page.per_page, 'bigint');
  const offset = q.sql.add((q.page.page - 1) * q.page.per_page, 'bigint');
  // A left join on the one-row total keeps the total even when the page is past the end.
  const result = await db.query<T & { total_items: number }>(
    `with matching as (
       select count(*)::float8 as total_items from ${q.from} ${where}
     )
     select m.total_items, r.*
     from matching m
     left join lateral (
       select ${q.select} from ${q.from} ${where} order by ${q.order(q.alias)} limit ${limit} offset ${offset}
     ) r on true
     order by ${q.order('r')}`,
    q.sql.values,
  );
  return splitTotal(result.rows);
}

/** Separates the total repeated on every row from the rows; a lone row of nulls means an empty page. */
export function splitTotal<T>(rows: (T & { total_items: number })[]): PageOf<T> {
  const total = rows[0]?.total_items ?? 0;
  const page = rows.length === 1 && isEmptyPageMarker(rows[0]!) ? [] : rows;
  return {
    total_items: total,
    rows: page.map((row) => {
      const { total_items: _total, ...rest } = row;
      return rest as unknown as T;
    }),
  };
}

function isEmptyPageMarker(row: Record<string, unknown>): boolean {
  return Object.entries(row).every(([key, value]) => key === 'total_items' || value === null);
}
