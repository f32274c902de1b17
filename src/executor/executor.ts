/**
 * The executor: admits waiting executions into free slots when new ones arrive or policies change,
 * and keeps time: expired leases, overdue executions, silent workers, idle lanes. It holds no state
 * of its own; any number may run at once, since every step is a SQL function safe under concurrency.
 */
import type pg from 'pg';
import { backoffMs, delay } from '../backoff.ts';
import { Listener } from '../db/listener.ts';
import { createPool } from '../db/pool.ts';
import { FailureStreak, type Logger } from '../log.ts';
import * as calls from '../queue/executor-calls.ts';
import { Wakeup } from '../wakeup.ts';
import { deleteExpiredAuditRows, deleteExpiredExecutions, RETENTION_INTERVAL_MS } from './retention.ts';
import { fireDueSchedules } from './schedules.ts';

export interface ExecutorOptions {
  readonly databaseUrl: string;
  readonly name: string;
  readonly leaseSeconds: number;
  readonly pollIntervalMs: number;
  readonly sweepIntervalMs: number;
  readonly idleLaneSeconds: number;
  /** How long the execution event log keeps an event, the reach of the stream's Last-Event-ID (default 3600). */
  readonly eventRetentionSeconds?: number;
  /** Ended executions are deleted this many days after they end (default 7); 0 keeps them. */
  readonly retentionDays?: number;
  /** Rows of the API's audit log are deleted this many days after the request (default 0: kept). */
  readonly auditRetentionDays?: number;
}

export class Executor {
  private readonly pool: pg.Pool;
  private readonly admission = new Wakeup();
  private readonly stopping = new AbortController();
  private listener: Listener | undefined;
  private loops: Promise<void>[] = [];

  constructor(private readonly options: ExecutorOptions, private readonly log: Logger) {
    this.pool = createPool({ url: options.databaseUrl, applicationName: `usher-executor:${options.name}`, max: 2 }, log);
  }

  start(): void {
    this.listener = new Listener({
      url: this.options.databaseUrl,
      applicationName: `usher-executor-listen:${this.options.name}`,
      channels: ['usher.execution_requested', 'usher.policy_changed'],
      onNotification: () => this.admission.notify(),
      onConnected: () => this.admission.notify(),
    }, this.log);
    this.listener.start();
    this.loops = [this.admissionLoop(), this.sweepLoop()];
    this.log.info({ event: 'executor:started' }, 'executor started');
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    this.admission.notify();
    await Promise.all(this.loops);
    await this.listener?.stop();
    await this.pool.end();
    this.log.info({ event: 'executor:stopped' }, 'executor stopped');
  }

  private async admissionLoop(): Promise<void> {
    const failures = new FailureStreak('admission:failed', 'admission:recovered');
    let sleepMs = 0;
    let lastOverdueCheck = 0;
    while (!this.stopping.signal.aborted) {
      await this.admission.wait(sleepMs);
      if (this.stopping.signal.aborted) break;
      try {
        const released = await calls.releaseDueDelayed(this.pool);
        const { lanes_visited, admitted } = await calls.admitQueued(this.pool);
        if (Date.now() - lastOverdueCheck >= this.options.sweepIntervalMs) {
          lastOverdueCheck = Date.now();
          const overdue = await calls.cancelOverdueWaiting(this.pool);
          if (overdue > 0) this.log.info({ event: 'admission:queue_timeout', count: overdue }, 'cancelled executions that waited past queue_timeout_seconds');
        }
        failures.succeeded(this.log, 'admission passes work again');
        if (admitted > 0 || released > 0) {
          this.log.debug({ event: 'admission:done', lanes_visited, admitted, released }, 'admitted');
          // A lane without a slot limit is admitted in batches: go again until a pass admits nothing.
          this.admission.notify();
        }
        // Sleep until the clock alone could change admission (a delayed start, a backoff or a lane
        // pause running out), measured on the database clock; NOTIFY wakes it earlier.
        const untilNext = await calls.msUntilNextWakeup(this.pool);
        sleepMs = Math.min(this.options.pollIntervalMs, untilNext ?? Infinity);
      } catch (error) {
        const inARow = failures.failed(this.log, error, 'admission pass failed; backing off');
        await delay(backoffMs(inARow), this.stopping.signal);
        this.admission.notify();
      }
    }
  }

  private async sweepLoop(): Promise<void> {
    const failures = new FailureStreak('sweep:failed', 'sweep:recovered');
    const scheduleFailures = new FailureStreak('schedule:pass_failed', 'schedule:recovered');
    let lastLaneCleanup = 0;
    let lastEventCleanup = 0;
    // The defaults of USHER_EVENT_RETENTION_MINUTES and USHER_RETENTION_DAYS, for embedders.
    const eventRetentionSeconds = this.options.eventRetentionSeconds ?? 3600;
    const retentionDays = this.options.retentionDays ?? 7;
    const auditRetentionDays = this.options.auditRetentionDays ?? 0;
    let lastRetention = -Infinity;
    let lastAuditRetention = -Infinity;
    while (!this.stopping.signal.aborted) {
      try {
        const ended = await calls.expireRunningExecutions(this.pool, this.options.leaseSeconds);
        if (ended > 0) this.log.info({ event: 'sweep:expired', count: ended }, 'ended executions whose lease expired or that overran their timeout');
        const lost = await calls.markLostWorkers(this.pool, this.options.leaseSeconds);
        if (lost > 0) this.log.warn({ event: 'sweep:workers_lost', count: lost }, 'workers stopped heartbeating');
        if (Date.now() - lastLaneCleanup > this.options.idleLaneSeconds * 1000) {
          lastLaneCleanup = Date.now();
          await calls.deleteIdleLanes(this.pool, this.options.idleLaneSeconds);
        }
        if (Date.now() - lastEventCleanup > Math.min(60, eventRetentionSeconds) * 1000) {
          lastEventCleanup = Date.now();
          await calls.deleteOldExecutionEvents(this.pool, eventRetentionSeconds);
        }
        failures.succeeded(this.log, 'sweeps work again');
      } catch (error) {
        failures.failed(this.log, error, 'sweep failed');
      }
      if (retentionDays > 0 && Date.now() - lastRetention >= RETENTION_INTERVAL_MS) {
        lastRetention = Date.now();
        await deleteExpiredExecutions(this.pool, retentionDays, this.log).catch((error: unknown) =>
          this.log.warn({ event: 'retention:failed', err: error }, 'retention pass failed; retrying next interval'));
      }
      if (auditRetentionDays > 0 && Date.now() - lastAuditRetention >= RETENTION_INTERVAL_MS) {
        lastAuditRetention = Date.now();
        await deleteExpiredAuditRows(this.pool, auditRetentionDays, this.log).catch((error: unknown) =>
          this.log.warn({ event: 'retention:audit_failed', err: error }, 'audit log retention pass failed; retrying next interval'));
      }
      // Cron schedules ride on the sweep's clock; a failure here must not hold up the sweep.
      try {
        await fireDueSchedules(this.pool, this.log);
        scheduleFailures.succeeded(this.log, 'schedule passes work again');
      } catch (error) {
        scheduleFailures.failed(this.log, error, 'schedule pass failed; retrying next sweep');
      }
      await delay(failures.inARow > 0 ? backoffMs(failures.inARow) : this.options.sweepIntervalMs, this.stopping.signal);
    }
  }
}
