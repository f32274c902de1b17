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
  /**
   * Connected through a pooler in transaction mode: nothing is set at connect. PgBouncer refuses
   * a startup parameter it does not track (`statement_timeout` among them), and a SET would stay
   * on a server connection other clients share; the pooler's own `query_timeout` and
   * `idle_transaction_timeout`, or the role's settings, take their place.
   */
  readonly transactionPooled?: boolean;
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
    ...(options.transactionPooled ? {} : {
      idle_in_transaction_session_timeout: 60_000,
      statement_timeout: options.statementTimeoutMs ?? 60_000,
    }),
    ...(options.queryTimeoutMs ? { query_timeout: options.queryTimeoutMs } : {}),
  });
  // An idle client that loses its connection emits here; without a listener the process would crash.
  pool.on('error', (error) => log.warn({ event: 'pool:client_error', err: error }, 'idle database connection failed'));
  return pool;
}

/** A pool or a checked-out client: anything that can run a query, including inside the caller's transaction. */
export type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * The pool with every statement sent unnamed. Behind a transaction pooler each transaction may
 * run on another server connection, where a statement prepared on the first is missing, or
 * already prepared by another client under the same name.
 */
export function withUnnamedStatements(pool: pg.Pool): Queryable {
  const query = (config: string | pg.QueryConfig, values?: unknown[]) => {
    if (typeof config === 'string') return pool.query(config, values);
    const { name: _prepared, ...unnamed } = config;
    return pool.query(unnamed, values);
  };
  return { query: query as Queryable['query'] };
}
