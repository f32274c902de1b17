/**
 * The worker: claims admitted executions up to its free capacity, runs their handlers, keeps
 * their leases alive and reports each outcome with its lease token. It wakes on NOTIFY and polls
 * as a fallback; marks and heartbeats use their own connections, apart from anything handlers do.
 */
import { hostname } from 'node:os';
import type pg from 'pg';
import { backoffMs, delay } from '../backoff.ts';
import { Listener } from '../db/listener.ts';
import type { PoolMode } from '../config.ts';
import { createPool, withUnnamedStatements, type Queryable } from '../db/pool.ts';
import { FailureStreak, type Logger } from '../log.ts';
import type { ClaimedExecution, MarkResult } from '../queue/types.ts';
import * as calls from '../queue/worker-calls.ts';
import type { Completion } from '../queue/worker-calls.ts';
import { Wakeup } from '../wakeup.ts';
import { CompletionBatcher } from './completions.ts';
import { reportOutcome } from './marks.ts';
import type { LoadedAction } from './packs.ts';
import { LeaseKeeper } from './leases.ts';
import { RunningExecution, runHandler, type Outcome } from './runner.ts';

export interface WorkerOptions {
  readonly databaseUrl: string;
  readonly actions: readonly LoadedAction[];
  readonly concurrency: number;
  /**
   * Executions claimed beyond `concurrency`, held in this process until a slot frees: the next one
   * starts without a round trip. They count as running in the database (leased to this worker,
   * started_at set at the claim) and their leases are renewed; 0 claims only for free slots.
   */
  readonly prefetch?: number;
  readonly name?: string;
  readonly leaseSeconds: number;
  readonly pollIntervalMs: number;
  /**
   * `transaction` behind a pooler in transaction mode: no LISTEN (work is found by polling every
   * `pollIntervalMs`, a cancel reaches its handler with the next heartbeat), no named statements,
   * nothing set at connect. Default `session`.
   */
  readonly poolMode?: PoolMode;
  /** Where to LISTEN: by default `databaseUrl`, except in transaction mode, where no URL means polling only. */
  readonly listenUrl?: string;
  readonly shutdownGraceSeconds: number;
  readonly abortGraceSeconds: number;
  /** Called once if marking an execution failed with an error retrying cannot fix; the process should stop. */
  readonly onFatal?: (error: Error) => void;
}

export class Worker {
  private readonly handlers: Map<string, LoadedAction>;
  private readonly running = new Map<string, RunningExecution>();
  /** Handlers executing now: at most `concurrency`. `running` also holds those whose outcome is being marked. */
  private handlersRunning = 0;
  /** Claimed ahead (prefetch), in claim order, waiting for a slot. */
  private readonly waiting: RunningExecution[] = [];
  /** Executions asked for by claims on their way to the database. */
  private claimsInFlight = 0;
  private readonly wakeup = new Wakeup();
  private readonly stopping = new AbortController();
  private readonly pool: pg.Pool;
  /** The pool as the data path's calls use it: named statements unless behind a transaction pooler. */
  private readonly db: Queryable;
  private readonly leases: LeaseKeeper;
  private readonly completions = new CompletionBatcher((batch) => this.completeAndClaim(batch));
  private listener: Listener | undefined;
  private claimLoop: Promise<void> | undefined;
  private inFlight = new Set<Promise<void>>();
  /** The claim loop woke while every slot was taken: whoever frees a slot must wake it again. */
  private wokenWhileFull = false;
  private startScheduled = false;
  private workerId = '';
  private log: Logger;
  /** Set when a finished execution could not be marked: the worker stops taking work. */
  fatal: Error | undefined;

  constructor(private readonly options: WorkerOptions, log: Logger) {
    this.handlers = new Map(options.actions.map((action) => [action.ref, action]));
    this.log = log;
    const name = options.name ?? `${hostname()}:${process.pid}`;
    const transactionPooled = options.poolMode === 'transaction';
    this.pool = createPool({ url: options.databaseUrl, applicationName: `usher-worker:${name}`, max: 3, transactionPooled }, log);
    this.db = transactionPooled ? withUnnamedStatements(this.pool) : this.pool;
    this.leases = new LeaseKeeper({
      databaseUrl: options.databaseUrl,
      name,
      leaseSeconds: options.leaseSeconds,
      transactionPooled,
      held: () => [...this.running.values(), ...this.waiting],
      settleAborted: () => this.dropAbortedWaiting(),
    }, log);
  }

  get id(): string {
    return this.workerId;
  }

  async start(): Promise<void> {
    const name = this.options.name ?? `${hostname()}:${process.pid}`;
    this.workerId = await calls.registerWorker(this.db, {
      name,
      host: hostname(),
      pid: process.pid,
      actions: this.options.actions.map(({ ref, description, timeout_seconds }) => ({ ref, description, timeout_seconds })),
      concurrency: this.options.concurrency,
    });
    this.log = this.log.child({ worker_id: this.workerId });
    const listenUrl = this.options.listenUrl ?? (this.options.poolMode === 'transaction' ? undefined : this.options.databaseUrl);
    if (listenUrl) this.startListener(listenUrl, name);
    this.leases.start(this.workerId, this.log);
    this.claimLoop = this.runClaimLoop();
    this.log.info({
      event: 'worker:started', name, actions: [...this.handlers.keys()], concurrency: this.options.concurrency,
      pool_mode: this.options.poolMode ?? 'session', wakes_by: listenUrl ? 'notify' : 'poll',
    }, 'worker started');
  }

  /** Wake-ups by NOTIFY, on a session of their own; a transaction pooler cannot carry a LISTEN. */
  private startListener(url: string, name: string): void {
    this.listener = new Listener({
      url,
      applicationName: `usher-worker-listen:${name}`,
      channels: ['usher.execution_scheduled', 'usher.execution_canceling'],
      onNotification: (channel, payload) => this.onNotification(channel, payload),
      // Notifications sent while the connection was down are gone: look for work and for cancels again.
      onConnected: () => {
        this.wakeup.notify();
        this.leases.onListenerConnected();
      },
    }, this.log);
    this.listener.start();
  }

  /** Graceful stop: no new claims; running handlers get the grace period, then are aborted and handed back. */
  async stop(): Promise<void> {
    if (this.stopping.signal.aborted) return;
    this.stopping.abort();
    this.wakeup.notify();
    await this.claimLoop;
    // Claimed ahead and never started: back to their places at once, for other workers.
    for (const execution of this.waiting) execution.abort('shutdown');
    this.startWaiting();
    const graceOver = delay(this.options.shutdownGraceSeconds * 1000);
    await Promise.race([Promise.all(this.inFlight), graceOver]);
    for (const execution of this.running.values()) execution.abort('shutdown');
    await Promise.all(this.inFlight);
    this.leases.stopRenewing();
    await this.listener?.stop();
    await calls.stopWorker(this.db, this.workerId).catch((error: unknown) =>
      this.log.warn({ event: 'worker:stop_unrecorded', err: error }, 'could not record the stop'));
    await Promise.all([this.pool.end(), this.leases.close()]);
    this.log.info({ event: 'worker:stopped' }, 'worker stopped');
  }

  private onNotification(channel: string, payload: string): void {
    if (channel === 'usher.execution_canceling') {
      this.leases.onCancelNotified(payload);
      return;
    }
    this.wakeup.notify();
  }

  /**
   * How many more executions this worker may claim now: free handler slots plus free room in the
   * waiting line. Executions whose handler returned and whose mark is on its way take neither: a
   * batch of completions refills the line while the line keeps the handlers busy, so the database
   * and this process work at the same time instead of taking turns.
   */
  private capacity(): number {
    return this.options.concurrency + (this.options.prefetch ?? 0) - this.handlersRunning - this.waiting.length - this.claimsInFlight;
  }

  private async runClaimLoop(): Promise<void> {
    const failures = new FailureStreak('claim:failed', 'claim:recovered');
    const actionRefs = [...this.handlers.keys()];
    while (!this.stopping.signal.aborted && !this.fatal) {
      await this.wakeup.wait(this.options.pollIntervalMs);
      if (this.stopping.signal.aborted || this.fatal) break;
      // Completions about to be sent claim for the room they leave; claiming for it here as well
      // would split one round trip into two.
      const wanted = this.capacity() - this.completions.queued;
      if (wanted <= 0) this.wokenWhileFull = true;
      if (wanted <= 0 || actionRefs.length === 0) continue;
      let claims: ClaimedExecution[];
      const claimSentAt = performance.now();
      this.claimsInFlight += wanted;
      try {
        claims = await calls.claimScheduled(this.db, this.workerId, actionRefs, wanted, this.options.leaseSeconds);
        failures.succeeded(this.log, 'claims answered again');
      } catch (error) {
        const inARow = failures.failed(this.log, error, 'claim failed; backing off');
        await delay(backoffMs(inARow), this.stopping.signal);
        this.wakeup.notify();
        continue;
      } finally {
        this.claimsInFlight -= wanted;
      }
      this.accept(claims, claimSentAt);
      // A full batch means more may be waiting.
      if (claims.length === wanted) this.wakeup.notify();
    }
  }

  /** Claimed executions join the waiting line, and start in claim order as slots allow. */
  private accept(claims: readonly ClaimedExecution[], claimSentAt: number): void {
    for (const claim of claims) {
      const execution = new RunningExecution(claim, claimSentAt);
      // Claimed by a batch of completions sent before a stop began: handed back, not started.
      if (this.stopping.signal.aborted) execution.abort('shutdown');
      this.waiting.push(execution);
    }
    this.startWaiting();
    this.leases.onClaimsAccepted(claims.map((claim) => claim.id));
  }

  /**
   * Starts the next waiting executions after pending I/O. Handlers that never wait (no-ops, pure
   * computation) would otherwise run the whole waiting line in one chain of promise callbacks, and
   * the answers and batches of the database connection would wait until the line is empty.
   */
  private startWaitingSoon(): void {
    if (this.startScheduled) return;
    this.startScheduled = true;
    setImmediate(() => {
      this.startScheduled = false;
      this.startWaiting();
    });
  }

  private startWaiting(): void {
    while (this.waiting.length > 0 && (this.handlersRunning < this.options.concurrency || this.waiting[0]!.cause)) {
      this.execute(this.waiting.shift()!);
    }
  }

  private execute(running: RunningExecution): void {
    const { claim } = running;
    this.running.set(claim.id, running);
    // The execution's child logger is made only when something logs for it: a handler that
    // reads ctx.log, or the worker's own lines (at warn, a completed execution logs none).
    let childLog: Logger | undefined;
    const log = () => (childLog ??= this.log.child({ execution_id: claim.id, action_ref: claim.action_ref, attempt: claim.attempt }));
    const handler = this.handlers.get(claim.action_ref)!.handler;
    let claimedInMark = false;
    // Aborted while it waited (shutdown, cancel, lost lease): reported without running.
    const abortedWhileWaiting = running.cause;
    const runs = abortedWhileWaiting === undefined;
    if (runs && this.log.isLevelEnabled('debug')) log().debug({ event: 'execution:started' }, 'running');
    const outcome: Promise<Outcome> = runs
      ? runHandler(handler, running, log, this.options.abortGraceSeconds * 1000)
      : Promise.resolve({ kind: 'aborted', cause: abortedWhileWaiting === 'timeout' ? 'shutdown' : abortedWhileWaiting });
    this.handlersRunning += 1;
    const task = outcome
      .then(async (ended) => {
        // The handler is done: its slot goes to the next waiting execution while the outcome is marked.
        this.handlersRunning -= 1;
        if (runs && this.log.isLevelEnabled('debug')) log().debug({ event: 'execution:returned', outcome: ended.kind }, 'handler settled');
        this.startWaitingSoon();
        claimedInMark = await reportOutcome({
          db: this.db,
          leaseSeconds: this.options.leaseSeconds,
          logsInfo: this.log.isLevelEnabled('info'),
          // Completions go in the next batch, which claims for the slots they free; alone once stopping.
          batchCompletion: (completion) => (this.stopping.signal.aborted || this.fatal ? undefined : this.completions.complete(completion)),
        }, running, ended, log);
      })
      .catch((error: unknown) => this.die(error, claim, log()))
      .finally(() => {
        this.running.delete(claim.id);
        this.inFlight.delete(task);
        this.startWaiting();
        // A completion that also claimed has already looked for work for this slot; the loop
        // needs waking only if it was told of work while full, or for anything else.
        if (!claimedInMark || this.wokenWhileFull || this.stopping.signal.aborted || this.fatal) {
          this.wokenWhileFull = false;
          this.wakeup.notify();
        }
      });
    this.inFlight.add(task);
  }

  /** One batch of completions, claiming for the slots they free and any prefetch room (nothing once stopping). */
  private async completeAndClaim(batch: readonly Completion[]): Promise<MarkResult[]> {
    const sentAt = performance.now();
    const limit = this.stopping.signal.aborted || this.fatal ? 0 : Math.max(0, this.capacity());
    this.claimsInFlight += limit;
    try {
      const answer = await calls.completeAndClaim(this.db, batch, {
        workerId: this.workerId,
        actionRefs: [...this.handlers.keys()],
        limit,
        leaseSeconds: this.options.leaseSeconds,
      });
      this.claimsInFlight -= limit;
      this.accept(answer.claims, sentAt);
      return answer.statuses;
    } catch (error) {
      this.claimsInFlight -= limit;
      throw error;
    }
  }

  /**
   * A mark failed with an error retrying cannot fix (not the database being unreachable, which
   * markWithRetry rides out): the worker stops taking work; the lease brings the slot back.
   */
  private die(error: unknown, claim: ClaimedExecution, log: Logger): void {
    if (this.fatal) return;
    this.fatal = error instanceof Error ? error : new Error(String(error));
    this.options.onFatal?.(this.fatal);
    log.error({ event: 'worker:mark_impossible', err: error, execution_id: claim.id }, 'could not mark an execution; worker stops claiming');
    this.wakeup.notify();
  }

  /** A waiting execution aborted (its lease lost, or cancelled) is settled now, not when a slot frees. */
  private dropAbortedWaiting(): void {
    const aborted = this.waiting.filter((execution) => execution.cause);
    if (aborted.length === 0) return;
    this.waiting.splice(0, this.waiting.length, ...this.waiting.filter((execution) => !execution.cause));
    for (const execution of aborted) this.execute(execution);
  }
}
