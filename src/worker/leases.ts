/**
 * Keeping a worker's leases: renewals every third of a lease on a connection of their own, the
 * local deadline that stops a handler before its lease can run out, and cancels, which only a
 * renewal's answer from the table decides.
 */
import type pg from 'pg';
import { createPool, withUnnamedStatements, type Queryable } from '../db/pool.ts';
import { FailureStreak, type Logger } from '../log.ts';
import * as calls from '../queue/worker-calls.ts';
import type { RunningExecution } from './runner.ts';

/** Renewals on hints are at least this far apart: a cancel reaches its handler within about this. */
const HINTED_RENEWAL_SPACING_MS = 100;

export interface LeaseKeeperOptions {
  readonly databaseUrl: string;
  readonly name: string;
  readonly leaseSeconds: number;
  /** Behind a pooler in transaction mode: nothing set at connect, no named statements. */
  readonly transactionPooled?: boolean;
  /** Every execution whose lease the worker holds: started or waiting for a slot. */
  readonly held: () => RunningExecution[];
  /** Called after executions were aborted, so the ones waiting for a slot are settled at once. */
  readonly settleAborted: () => void;
}

export class LeaseKeeper {
  private readonly pool: pg.Pool;
  private readonly db: Queryable;
  /** Ids of cancel notifications that named no execution held here: the claim's answer may still be on its way. */
  private readonly cancelHints = new Set<string>();
  private renewTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private workerId = '';
  private readonly failures = new FailureStreak('heartbeat:failed', 'heartbeat:recovered');
  /** A renewal asked for by a hint is on its way, or waiting for its turn. */
  private hintedRenewal = false;
  private renewAfterHinted = false;
  private lastHintedAt = -Infinity;
  private hintTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly options: LeaseKeeperOptions, private log: Logger) {
    this.pool = createPool({
      url: options.databaseUrl,
      applicationName: `usher-worker-heartbeat:${options.name}`,
      max: 1,
      queryTimeoutMs: Math.max(1000, (options.leaseSeconds * 1000) / 3),
      connectionTimeoutMs: Math.max(1000, (options.leaseSeconds * 1000) / 3),
      transactionPooled: options.transactionPooled,
    }, log);
    this.db = options.transactionPooled ? withUnnamedStatements(this.pool) : this.pool;
  }

  start(workerId: string, log: Logger): void {
    this.workerId = workerId;
    this.log = log;
    const renewMs = Math.max(100, (this.options.leaseSeconds * 1000) / 3);
    this.renewTimer = setInterval(() => void this.renew(), renewMs);
    // Checked more often than renewals go out, so a handler is stopped close to its local deadline.
    this.checkTimer = setInterval(() => this.abortExpiring(), renewMs / 4);
  }

  /** No more renewals (before the worker records its stop, which a renewal would undo). */
  stopRenewing(): void {
    this.stopped = true;
    clearInterval(this.renewTimer);
    clearInterval(this.checkTimer);
    clearTimeout(this.hintTimer);
  }

  close(): Promise<void> {
    return this.pool.end();
  }

  /** A cancel notification's ids (a hint: only a renewal's answer from the table decides to abort). */
  onCancelNotified(payload: string): void {
    const ids = payload.split(',');
    const held = new Set(this.options.held().map(({ claim }) => claim.id));
    if (payload === '' || ids.some((id) => held.has(id))) {
      this.renewOnHint();
      return;
    }
    // Mostly other workers' executions: kept bounded, checked when claims are accepted.
    if (this.cancelHints.size + ids.length > 1000) this.cancelHints.clear();
    for (const id of ids) this.cancelHints.add(id);
  }

  /** LISTEN (re)connected: a cancel notified while it was down is found by a renewal's answer. */
  onListenerConnected(): void {
    this.renewOnHint();
  }

  /** Claims just accepted: a cancel that arrived before their answer is looked up now. */
  onClaimsAccepted(ids: readonly string[]): void {
    if (ids.filter((id) => this.cancelHints.delete(id)).length > 0) this.renewOnHint();
  }

  /**
   * A renewal asked for by a hint (a notification, a reconnect, claims just accepted): one on its
   * way at a time and at most one every HINTED_RENEWAL_SPACING_MS, and all those asked for
   * meanwhile become one more after it. Anyone who can connect can send notifications: a flood of
   * them costs a few queries a second, not one each. The timer's renewals stay apart: they go out
   * even while one hangs.
   */
  private renewOnHint(): void {
    if (this.stopped) return;
    if (this.hintedRenewal) {
      this.renewAfterHinted = true;
      return;
    }
    this.hintedRenewal = true;
    const wait = Math.max(0, this.lastHintedAt + HINTED_RENEWAL_SPACING_MS - performance.now());
    this.hintTimer = setTimeout(() => {
      this.lastHintedAt = performance.now();
      void this.renew().finally(() => {
        this.hintedRenewal = false;
        if (this.renewAfterHinted) {
          this.renewAfterHinted = false;
          this.renewOnHint();
        }
      });
    }, wait);
  }

  /**
   * The database cannot expire a lease earlier than a lease's length after the request that last
   * renewed it was sent. Renewals go out every third of a lease; when the last answered one is five
   * sixths of a lease old (database unreachable, or two renewals in a row hanging) the lease is about
   * to run out and its slot to go to the next execution, so the handler must stop rather than run
   * beside it. One slow renewal alone (up to half a lease late) does not stop it.
   */
  private abortExpiring(): void {
    const abortAfterMs = (this.options.leaseSeconds * 1000 * 5) / 6;
    for (const execution of this.options.held()) {
      if (performance.now() - execution.leaseRenewalSentAt > abortAfterMs) execution.abort('lease_lost');
    }
    this.options.settleAborted();
  }

  private async renew(): Promise<void> {
    this.abortExpiring();
    const asked = this.options.held().filter((execution) => execution.cause !== 'lease_lost');
    const sentAt = performance.now();
    try {
      const held = await calls.heartbeatWorker(this.db, this.workerId, asked.map(({ claim }) => claim), this.options.leaseSeconds);
      const byToken = new Map(held.map((lease) => [lease.lease_token, lease]));
      // Executions claimed after this heartbeat was sent are not in its answer.
      for (const execution of asked) {
        const lease = byToken.get(execution.claim.lease_token);
        if (lease === undefined) {
          execution.abort('lease_lost');
          continue;
        }
        // Answers of overlapping heartbeats can arrive out of order: keep the newest renewal. A
        // lease held but not renewed (its row was locked by a mark) runs on from the last one.
        if (lease.renewed) execution.leaseRenewalSentAt = Math.max(execution.leaseRenewalSentAt, sentAt);
        if (lease.status === 'canceling') execution.abort('cancel');
      }
      this.options.settleAborted();
      this.failures.succeeded(this.log, 'heartbeats answered again');
    } catch (error) {
      this.failures.failed(this.log, error, 'heartbeat failed');
    }
  }
}
