/**
 * The only reader of process.env. Every setting is validated at once, so a bad value fails at
 * start with a message naming the variable, never halfway through a run.
 */
import { z } from 'zod';
import { ConfigError } from './errors.ts';

const positiveInt = z.coerce.number().int().positive();
const nonNegativeInt = z.coerce.number().int().nonnegative();

const envSchema = z.object({
  DATABASE_URL: z.string().min(1).optional(),
  USHER_DATA_DIR: z.string().min(1).default('.usher'),
  USHER_EMBEDDED_PORT: positiveInt.max(65535).default(54329),
  USHER_LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  USHER_LEASE_SECONDS: positiveInt.default(30),
  USHER_POLL_INTERVAL_MS: positiveInt.default(1000),
  USHER_SWEEP_INTERVAL_MS: positiveInt.default(1000),
  USHER_WORKER_CONCURRENCY: positiveInt.max(10000).default(10),
  USHER_SHUTDOWN_GRACE_SECONDS: nonNegativeInt.default(25),
  USHER_ABORT_GRACE_SECONDS: nonNegativeInt.default(5),
  USHER_IDLE_LANE_SECONDS: positiveInt.default(300),
});

export interface Config {
  /** Postgres to use; absent means an embedded Postgres under dataDir. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly embeddedPort: number;
  readonly logLevel: string;
  /** How long a claim stays valid without a heartbeat. Heartbeats run at a third of it. */
  readonly leaseSeconds: number;
  /** Fallback poll when no NOTIFY arrives. */
  readonly pollIntervalMs: number;
  /** How often the executor looks for expired leases and overdue executions. */
  readonly sweepIntervalMs: number;
  readonly workerConcurrency: number;
  /** On SIGTERM, how long running handlers may take to finish before they are aborted. */
  readonly shutdownGraceSeconds: number;
  /** After an abort (timeout, cancel, shutdown), how long a handler may take to settle. */
  readonly abortGraceSeconds: number;
  readonly idleLaneSeconds: number;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  return Object.freeze({
    databaseUrl: e.DATABASE_URL,
    dataDir: e.USHER_DATA_DIR,
    embeddedPort: e.USHER_EMBEDDED_PORT,
    logLevel: e.USHER_LOG_LEVEL,
    leaseSeconds: e.USHER_LEASE_SECONDS,
    pollIntervalMs: e.USHER_POLL_INTERVAL_MS,
    sweepIntervalMs: e.USHER_SWEEP_INTERVAL_MS,
    workerConcurrency: e.USHER_WORKER_CONCURRENCY,
    shutdownGraceSeconds: e.USHER_SHUTDOWN_GRACE_SECONDS,
    abortGraceSeconds: e.USHER_ABORT_GRACE_SECONDS,
    idleLaneSeconds: e.USHER_IDLE_LANE_SECONDS,
  });
}
