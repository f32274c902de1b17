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
  USHER_WORKER_PREFETCH: nonNegativeInt.max(10000).default(0),
  USHER_WORKER_POOL_MODE: z.enum(['session', 'transaction']).default('session'),
  USHER_WORKER_LISTEN_URL: z.string().min(1).optional(),
  USHER_SHUTDOWN_GRACE_SECONDS: nonNegativeInt.default(25),
  USHER_ABORT_GRACE_SECONDS: nonNegativeInt.default(5),
  USHER_IDLE_LANE_SECONDS: positiveInt.default(300),
  USHER_EVENT_RETENTION_MINUTES: positiveInt.max(525_600).default(60),
  USHER_RETENTION_DAYS: z.coerce.number().nonnegative().max(36500).default(7),
  USHER_AUDIT_RETENTION_DAYS: z.coerce.number().nonnegative().max(36500).default(0),
  USHER_API_PORT: nonNegativeInt.max(65535).default(8080),
  USHER_API_HOST: z.string().trim().min(1).default('127.0.0.1'),
  USHER_API_TOKENS: z.string().default('').transform((value, ctx) => parseApiTokens(value, ctx)),
  USHER_MIGRATE: z.enum(['auto', 'check']).default('auto'),
  USHER_API_POOL_SIZE: positiveInt.max(1000).default(10),
  USHER_API_MAX_WAITING: nonNegativeInt.max(100_000).default(100),
  USHER_API_RATE_LIMIT: nonNegativeInt.max(1_000_000).default(200),
  USHER_API_RATE_WINDOW_SECONDS: positiveInt.max(3600).default(1),
});

export type ApiRole = 'read' | 'write' | 'admin';

export type PoolMode = 'session' | 'transaction';

export interface ApiToken {
  readonly role: ApiRole;
  readonly token: string;
  /** The packs whose actions the token may use; absent: every pack, and the routes about the whole queue. */
  readonly packs?: readonly string[];
}

const tokenPattern = /^[A-Za-z0-9._~+/=-]{16,512}$/;
const packsPattern = /^[a-z][a-z0-9_-]*(\+[a-z][a-z0-9_-]*)*$/;

/**
 * USHER_API_TOKENS: comma-separated `role:token` pairs, role `read`, `write` or `admin`, optionally
 * limited to packs (`write@billing+ops:token`). Tokens are at least 16 characters of the RFC 6750
 * token alphabet, and a token may appear once. Messages never echo a token.
 */
function parseApiTokens(value: string, ctx: z.RefinementCtx): ApiToken[] {
  const tokens: ApiToken[] = [];
  const entries = value.split(',').map((entry) => entry.trim()).filter((entry) => entry.length > 0);
  entries.forEach((entry, index) => {
    const colon = entry.indexOf(':');
    const head = colon < 0 ? '' : entry.slice(0, colon).trim();
    const at = head.indexOf('@');
    const role = at < 0 ? head : head.slice(0, at);
    const packs = at < 0 ? undefined : head.slice(at + 1);
    const token = colon < 0 ? '' : entry.slice(colon + 1).trim();
    if (role !== 'read' && role !== 'write' && role !== 'admin') {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} must be read:<token>, write:<token> or admin:<token>, optionally as role@pack+pack:<token>` });
    } else if (packs !== undefined && !packsPattern.test(packs)) {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} (${role}): after @ come pack names joined by +, each a lower-case letter then a-z 0-9 _ -` });
    } else if (!tokenPattern.test(token)) {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} (${role}): a token is 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = -` });
    } else if (tokens.some((known) => known.token === token)) {
      ctx.addIssue({ code: 'custom', message: `entry ${index + 1} (${role}): the same token is listed twice` });
    } else {
      tokens.push(packs === undefined ? { role, token } : { role, token, packs: [...new Set(packs.split('+'))] });
    }
  });
  return tokens;
}

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
  /** Executions a worker claims beyond its concurrency, to start each next one without a round trip. */
  readonly workerPrefetch: number;
  /**
   * `transaction` when the worker connects through a pooler in transaction mode (PgBouncer
   * `pool_mode = transaction`): it then keeps no session state (no LISTEN, no named statements, no
   * settings at connect) and finds work by polling.
   */
  readonly workerPoolMode: PoolMode;
  /**
   * Where a worker LISTENs, when not on DATABASE_URL: a direct connection beside a transaction
   * pooler, so wake-ups stay NOTIFY-driven. Absent in transaction mode means polling only.
   */
  readonly workerListenUrl: string | undefined;
  /** On SIGTERM, how long running handlers may take to finish before they are aborted. */
  readonly shutdownGraceSeconds: number;
  /** After an abort (timeout, cancel, shutdown), how long a handler may take to settle. */
  readonly abortGraceSeconds: number;
  readonly idleLaneSeconds: number;
  /** How long the execution event log (GET /executions/stream) keeps events. */
  readonly eventRetentionSeconds: number;
  /** Ended executions are deleted this many days after they end; 0 keeps them forever. */
  readonly retentionDays: number;
  /** Rows of the API's audit log are deleted this many days after the request; 0 keeps them forever. */
  readonly auditRetentionDays: number;
  /** Where `usher api` listens; 0 picks a free port. */
  readonly apiPort: number;
  readonly apiHost: string;
  /** Bearer tokens of the HTTP API; empty means open, which only a loopback host allows. */
  readonly apiTokens: readonly ApiToken[];
  /**
   * `auto`: a process brings the schema up to date as it starts. `check`: it only checks that the
   * schema is current and refuses to start otherwise, for processes that connect as a role without
   * the right to change it (`usher_api`); `usher migrate`, run as the owner, migrates.
   */
  readonly migrateMode: 'auto' | 'check';
  /** Database connections of one API process. */
  readonly apiPoolSize: number;
  /**
   * Requests that may wait for one of those connections; the next is refused at once with 503
   * `overloaded`, so a flood cannot queue up work that would only time out.
   */
  readonly apiMaxWaiting: number;
  /** Requests per client (token, or address without a valid token) per window; 0 turns the limit off. */
  readonly apiRateLimit: number;
  readonly apiRateWindowSeconds: number;
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
    workerPrefetch: e.USHER_WORKER_PREFETCH,
    workerPoolMode: e.USHER_WORKER_POOL_MODE,
    workerListenUrl: e.USHER_WORKER_LISTEN_URL,
    shutdownGraceSeconds: e.USHER_SHUTDOWN_GRACE_SECONDS,
    abortGraceSeconds: e.USHER_ABORT_GRACE_SECONDS,
    idleLaneSeconds: e.USHER_IDLE_LANE_SECONDS,
    eventRetentionSeconds: e.USHER_EVENT_RETENTION_MINUTES * 60,
    retentionDays: e.USHER_RETENTION_DAYS,
    auditRetentionDays: e.USHER_AUDIT_RETENTION_DAYS,
    apiPort: e.USHER_API_PORT,
    apiHost: e.USHER_API_HOST,
    apiTokens: Object.freeze(e.USHER_API_TOKENS.map((token) => Object.freeze({ ...token, ...(token.packs ? { packs: Object.freeze(token.packs) } : {}) }))),
    migrateMode: e.USHER_MIGRATE,
    apiPoolSize: e.USHER_API_POOL_SIZE,
    apiMaxWaiting: e.USHER_API_MAX_WAITING,
    apiRateLimit: e.USHER_API_RATE_LIMIT,
    apiRateWindowSeconds: e.USHER_API_RATE_WINDOW_SECONDS,
  });
}
