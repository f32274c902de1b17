/**
 * The TypeScript client: enqueue one or many (inside the caller's own transaction when given their
 * client), read, cancel, and wait for an execution to end. Errors are UsherErrors whose codes are the HTTP
 * API's: unknown_action, action_disabled, invalid_params, invalid_execution, execution_not_found,
 * execution_terminal, database_unavailable, plus wait_timeout for waitFor.
 *
 *   const usher = createClient({ connectionString: process.env.DATABASE_URL });
 *   const execution = await usher.enqueue('ops.restart_host', { host: 'db-1' });
 *   const ended = await usher.waitFor(execution.id, { timeoutMs: 60_000 });
 */
import pg from 'pg';
import { Listener } from './db/listener.ts';
import type { Queryable } from './db/pool.ts';
import { terminalStatuses } from './db/schema.ts';
import { isTransientDatabaseError, UsherError } from './errors.ts';
import { idString } from './api/schemas.ts';
import { createLogger, type Logger } from './log.ts';
import { cancelExecution } from './queue/cancel.ts';
import { enqueue, enqueueMany, type EnqueueInput } from './queue/enqueue.ts';
import { findExecution, toExecutionRecord, type ExecutionRecord } from './queue/executions-read.ts';

export interface ClientOptions {
  /** Postgres URL; the client opens a pool of its own (closed by close()). */
  readonly connectionString?: string;
  /** Or a pool of yours (close() leaves it open); LISTEN uses connectionString, else the pool's. */
  readonly pool?: pg.Pool;
  /** waitFor re-reads the executions it waits for this often, in case a NOTIFY was missed (default 5 s). */
  readonly pollIntervalMs?: number;
  readonly log?: Logger;
}

export interface EnqueueOptions extends Omit<EnqueueInput, 'action_ref' | 'params'> {
  /** Your client inside an open transaction: the execution is queued only if you commit. */
  readonly client?: Queryable;
}

export interface EnqueueManyOptions {
  /** Your client inside an open transaction: the executions are queued only if you commit. */
  readonly client?: Queryable;
}

export interface WaitOptions {
  /** Rejects with wait_timeout after this long (default: wait forever). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface UsherClient {
  enqueue(actionRef: string, params?: Record<string, unknown>, options?: EnqueueOptions): Promise<ExecutionRecord>;
  /**
   * Enqueues every input in one statement, all or none; they join their lanes in this order, and the
   * answer follows it. An input whose idempotency_key is held gets the execution that holds it.
   */
  enqueueMany(executions: readonly EnqueueInput[], options?: EnqueueManyOptions): Promise<ExecutionRecord[]>;
  /** Throws execution_not_found for an unknown id. */
  get(id: string): Promise<ExecutionRecord>;
  /** Ends a waiting execution, or asks a running one's worker to stop it (status canceling); execution_terminal if it already ended. */
  cancel(id: string, reason?: string): Promise<ExecutionRecord>;
  /** Resolves with the execution once it has ended (completed, failed, cancelled, timeout or abandoned). */
  waitFor(id: string, options?: WaitOptions): Promise<ExecutionRecord>;
  close(): Promise<void>;
}

interface Waiter {
  readonly resolve: (execution: ExecutionRecord) => void;
  readonly reject: (error: unknown) => void;
}

export function createClient(options: ClientOptions): UsherClient {
  const url = options.connectionString ?? (options.pool as { options?: { connectionString?: string } } | undefined)?.options?.connectionString;
  if (!options.pool && !url) throw new UsherError('config_invalid', 'createClient needs a connectionString or a pool');
  const pool = options.pool ?? new pg.Pool({ connectionString: url, application_name: `usher-client:${process.pid}`, max: 5 });
  const log = options.log ?? createLogger('warn', { component: 'usher-client' });
  const waiters = new Map<string, Set<Waiter>>();
  let listener: Listener | undefined;
  let poll: NodeJS.Timeout | undefined;
  let closed = false;

  /** Settles the waiters of the given executions (all waited ones when undefined) that have ended. */
  async function settle(ids?: readonly string[]): Promise<void> {
    const wanted = (ids ?? [...waiters.keys()]).filter((id) => waiters.has(id));
    if (wanted.length === 0) return;
    const { rows } = await pool.query<Record<string, unknown>>(
      'select * from usher.executions where id = any($1::bigint[]) and status = any($2::text[])', [wanted, terminalStatuses]);
    for (const row of rows) {
      const execution = toExecutionRecord(row);
      for (const waiter of waiters.get(execution.id) ?? []) waiter.resolve(execution);
      waiters.delete(execution.id);
    }
  }

  function settleQuietly(ids?: readonly string[]): void {
    settle(ids).catch((error: unknown) => log.warn({ event: 'client:wait_check_failed', err: error }, 'could not read waited executions; retrying on the next poll'));
  }

  function startWatching(): void {
    if (!listener && url) {
      listener = new Listener({
        url,
        applicationName: `usher-client-listen:${process.pid}`,
        channels: ['usher.execution_completed'],
        // An empty payload means "too many ids to list": check every waited execution.
        onNotification: (_channel, payload) => settleQuietly(payload === '' ? undefined : payload.split(',')),
        onConnected: () => settleQuietly(),
      }, log);
      listener.start();
    }
    poll ??= setInterval(() => {
      if (waiters.size > 0) settleQuietly();
    }, options.pollIntervalMs ?? 5_000);
  }

  async function existing(id: string): Promise<ExecutionRecord> {
    assertId(id);
    const execution = await findExecution(pool, id);
    if (!execution) throw new UsherError('execution_not_found', `no execution with id ${id}`);
    return execution;
  }

  return {
    async enqueue(actionRef, params = {}, { client, ...rest } = {}) {
      const execution = await mapped(enqueue(client ?? pool, { ...rest, action_ref: actionRef, params }));
      return toExecutionRecord(execution as unknown as Record<string, unknown>);
    },

    async enqueueMany(executions, { client } = {}) {
      const enqueued = await mapped(enqueueMany(client ?? pool, executions));
      return enqueued.map((execution) => toExecutionRecord(execution as unknown as Record<string, unknown>));
    },

    get: (id) => mapped(existing(id)),

    async cancel(id, reason) {
      assertId(id);
      const outcome = await mapped(cancelExecution(pool, id, reason));
      if (!outcome.changed) {
        throw new UsherError('execution_terminal', `execution ${id} has already ended (${outcome.status}); there is nothing to cancel`);
      }
      return mapped(existing(id));
    },

    waitFor(id, { timeoutMs, signal } = {}) {
      if (closed) return Promise.reject(new UsherError('config_invalid', 'this Usher client is closed'));
      return new Promise<ExecutionRecord>((resolve, reject) => {
        let timer: NodeJS.Timeout | undefined;
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          const set = waiters.get(id);
          set?.delete(waiter);
          if (set?.size === 0) waiters.delete(id);
        };
        const waiter: Waiter = {
          resolve: (execution) => { done(); resolve(execution); },
          reject: (error) => { done(); reject(error); },
        };
        const onAbort = () => waiter.reject(signal?.reason ?? new Error('aborted'));
        if (signal?.aborted) return onAbort();
        signal?.addEventListener('abort', onAbort, { once: true });
        if (timeoutMs !== undefined) {
          timer = setTimeout(() => waiter.reject(new UsherError('wait_timeout', `execution ${id} did not end within ${timeoutMs} ms`)), timeoutMs);
        }
        // Registered before the first read, so an end between the read and the NOTIFY is not missed.
        waiters.set(id, (waiters.get(id) ?? new Set()).add(waiter));
        startWatching();
        mapped(existing(id)).then((execution) => {
          if (terminalStatuses.includes(execution.status)) waiter.resolve(execution);
        }, (error: unknown) => waiter.reject(error));
      });
    },

    async close() {
      closed = true;
      clearInterval(poll);
      for (const set of waiters.values()) {
        for (const waiter of set) waiter.reject(new UsherError('config_invalid', 'the Usher client was closed while waiting'));
      }
      await listener?.stop();
      if (!options.pool) await pool.end();
    },
  };
}

/** Connection failures become database_unavailable, as in the API; everything else passes as is. */
async function mapped<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (!(error instanceof UsherError) && isTransientDatabaseError(error)) {
      throw new UsherError('database_unavailable', `the database could not be reached: ${(error as Error).message}`, { cause: error });
    }
    throw error;
  }
}

function assertId(id: string): void {
  if (!idString.safeParse(id).success) throw new UsherError('execution_not_found', `no execution with id ${JSON.stringify(id)}: ids are positive whole numbers`);
}
