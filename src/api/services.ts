/**
 * What the API runs beside its routes: the event-log follower (stream and metrics) and the signal
 * that ends long responses when the server closes.
 */
import type pg from 'pg';
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
  const events = new EventFollower({ ...options, onEvents: (batch) => metrics.observe(batch) });
  const closing = new AbortController();
  return {
    events,
    metrics,
    closing: closing.signal,
    start: () => events.start(),
    async stop() {
      closing.abort();
      await events.stop();
    },
  };
}
