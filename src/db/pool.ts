/**
 * Connection pools. Every connection names its process in pg_stat_activity and carries timeouts
 * so a stuck statement or a forgotten transaction cannot pin locks or the xmin horizon.
 */
import pg from 'pg';
import type { Logger } from '../log.ts';

export interface PoolOptions {
  readonly url: string;
  /** Shown in pg_stat_activity, e.g. `usher-worker:12`. */
  readonly applicationName: string;
  readonly max: number;
  readonly statementTimeoutMs?: number;
  /** Client-side limit: a query with no answer by then fails even if the network went silent. */
  readonly queryTimeoutMs?: number;
  readonly connectionTimeoutMs?: number;
}

// bigint (int8) columns arrive as strings: ids stay exact in TypeScript and JSON.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => value);

export function createPool(options: PoolOptions, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    application_name: options.applicationName,
    max: options.max,
    keepAlive: true,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 10_000,
    idle_in_transaction_session_timeout: 60_000,
    statement_timeout: options.statementTimeoutMs ?? 60_000,
    ...(options.queryTimeoutMs ? { query_timeout: options.queryTimeoutMs } : {}),
  });
  // An idle client that loses its connection emits here; without a listener the process would crash.
  pool.on('error', (error) => log.warn({ event: 'pool:client_error', err: error }, 'idle database connection failed'));
  return pool;
}

/** A pool or a checked-out client: anything that can run a query, including inside the caller's transaction. */
export type Queryable = Pick<pg.ClientBase, 'query'>;
