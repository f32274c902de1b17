import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import type { UsherDatabase } from './schema.ts';

export type UsherKysely = Kysely<UsherDatabase>;

/** A Kysely instance over an existing pool. Its destroy() ends that pool, so only the pool's owner calls it. */
export function createKysely(pool: pg.Pool): UsherKysely {
  return new Kysely<UsherDatabase>({ dialect: new PostgresDialect({ pool }) });
}
