/**
 * What the API runs beside its routes: the event-log follower (stream and metrics) and the signal
 * that ends long responses when the server closes.
 */
import type pg from 'pg';
import { createPool } from '../db/pool.ts';
import type { Logger } from '../log.ts';
import { EventFollower } from './event-follower.ts';
import { createApiMetrics, type ApiMetrics } from './metrics.ts';

export interface ApiServices {
  readonly events: EventFollower;
  readonly metrics: ApiMetrics;
  readonly closing: AbortSignal;
  start(): void;
  /** Ends open streams and stops following the log. */
  stop(): Promise<void>;
}

export function createApiServices(options: { readonly pool: pg.Pool; readonly log: Logger; readonly databaseUrl: string }): ApiServices {
  const metrics = createApiMetrics(options.pool);
  // The follower's one connection is its own: a flood of requests holding every connection of the
  // request pool neither stalls the event streams and metrics nor is slowed down by them.
  const followerPool = createPool({
    url: options.databaseUrl, applicationName: `usher-api-follower:${process.pid}`, max: 1,
    statementTimeoutMs: 30_000, queryTimeoutMs: 35_000, connectionTimeoutMs: 5_000,
  }, options.log);
  const events = new EventFollower({ ...options, pool: followerPool, onEvents: (batch) => metrics.observe(batch) });
  const closing = new AbortController();
  return {
    events,
    metrics,
    closing: closing.signal,
    start: () => events.start(),
    async stop() {
      closing.abort();
      await events.stop();
      await followerPool.end();
    },
  };
}
