/**
 * Follows the execution event log for one API process: sequences committed changes when the
 * queue's NOTIFY channels say something changed while a stream is open (and on a short poll,
 * since claims send none), otherwise on the idle poll; hands every new event to `onEvents` (the
 * metrics), and tells stream subscribers the log moved on.
 * Subscribers read the log themselves from their own position, so a slow one holds up no one.
 */
import type pg from 'pg';
import { backoffMs, delay } from '../backoff.ts';
import { Listener } from '../db/listener.ts';
import type { Logger } from '../log.ts';
import { lastEventPosition, readExecutionEvents, sequenceExecutionEvents, type ExecutionEvent } from '../queue/events.ts';
import { Wakeup } from '../wakeup.ts';

export interface EventFollowerOptions {
  readonly pool: pg.Pool;
  /** For the LISTEN connection (while a stream is open). */
  readonly databaseUrl: string;
  readonly log: Logger;
  readonly onEvents?: (events: readonly ExecutionEvent[]) => void;
  /** Poll while a stream is open (claims send no NOTIFY); default 250 ms. */
  readonly streamPollMs?: number;
  /** Poll otherwise; default 2 s. */
  readonly idlePollMs?: number;
  /**
   * Least time between two passes, so a burst of NOTIFYs (one per enqueue and per completion
   * batch) costs one sequencing transaction, not one each: default 20 ms while a stream is
   * open, 200 ms otherwise.
   */
  readonly streamCoalesceMs?: number;
  readonly idleCoalesceMs?: number;
}

const channels = [
  'usher.execution_events', 'usher.execution_requested', 'usher.execution_scheduled',
  'usher.execution_completed', 'usher.execution_canceling',
];

export class EventFollower {
  private readonly wakeup = new Wakeup();
  private readonly subscribers = new Set<() => void>();
  private readonly stopping = new AbortController();
  /**
   * LISTENs (and watches for completions) only while a stream is open. Every NOTIFY wakes every
   * listening backend of the database, and watching makes every completing transaction notify:
   * metrics alone make do with the idle poll.
   */
  private listener: Listener | undefined;
  private loop: Promise<void> | undefined;
  private position: string | undefined;

  constructor(private readonly options: EventFollowerOptions) {}

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    this.wakeup.notify();
    await this.loop;
    await this.listener?.stop();
  }

  /** Calls `onAdvance` whenever the log may have grown; returns the unsubscribe function. */
  subscribe(onAdvance: () => void): () => void {
    this.subscribers.add(onAdvance);
    if (!this.listener && !this.stopping.signal.aborted) {
      this.listener = new Listener({
        url: this.options.databaseUrl,
        applicationName: `usher-api-events:${process.pid}`,
        channels,
        onNotification: () => this.wakeup.notify(),
        onConnected: () => this.wakeup.notify(),
      }, this.options.log);
      this.listener.start();
    }
    this.wakeup.notify();
    return () => {
      this.subscribers.delete(onAdvance);
      if (this.subscribers.size === 0 && this.listener) {
        const listener = this.listener;
        this.listener = undefined;
        void listener.stop();
      }
    };
  }

  private async run(): Promise<void> {
    let failures = 0;
    let lastPass = -Infinity;
    while (!this.stopping.signal.aborted) {
      const streaming = this.subscribers.size > 0;
      const pollMs = streaming ? this.options.streamPollMs ?? 250 : this.options.idlePollMs ?? 2_000;
      await this.wakeup.wait(failures > 0 ? backoffMs(failures) : pollMs);
      const coalesceMs = streaming ? this.options.streamCoalesceMs ?? 20 : this.options.idleCoalesceMs ?? 200;
      const early = lastPass + coalesceMs - performance.now();
      if (early > 0) await delay(early, this.stopping.signal);
      if (this.stopping.signal.aborted) break;
      lastPass = performance.now();
      try {
        await this.followOnce();
        failures = 0;
      } catch (error) {
        failures += 1;
        this.options.log.warn({ event: 'events:follow_failed', err: error, failures }, 'could not read the execution event log');
      }
    }
  }

  private async followOnce(): Promise<void> {
    await sequenceExecutionEvents(this.options.pool);
    // Metrics count what happened from this process's start on.
    this.position ??= await lastEventPosition(this.options.pool);
    for (;;) {
      const events = await readExecutionEvents(this.options.pool, this.position, {}, 2_000);
      if (events.length === 0) break;
      this.position = events.at(-1)!.position;
      this.options.onEvents?.(events);
      if (events.length < 2_000) break;
    }
    for (const subscriber of this.subscribers) subscriber();
  }
}
