/**
 * What the harness needs from each queue: enqueue one, enqueue many, start workers with a
 * concurrency and a handler, stop. Each system is one small adapter over its own public API.
 */

/** How the jobs of a scenario are limited. */
export type Mode =
  /** No limit beyond the workers' concurrency. */
  | { kind: 'free' }
  /** One strict FIFO lane, one at a time: each system's strictest serial mode. */
  | { kind: 'serial' }
  /** One lane with `threshold` at a time (peers without such a limit: one worker at that concurrency). */
  | { kind: 'limit'; threshold: number }
  /** Many lanes, one at a time in each (the job's `lane`). */
  | { kind: 'lanes' };

export interface Job {
  /** Enqueue order, from 0. */
  readonly seq: number;
  readonly lane?: number;
}

export type Handler = (job: Job) => Promise<void> | void;

export interface WorkerSettings {
  readonly concurrency: number;
  readonly mode: Mode;
  readonly handler: Handler;
}

export interface RunningWorkers {
  stop(): Promise<void>;
}

export type SystemName = 'usher' | 'graphile-worker' | 'pg-boss' | 'bullmq';
export type Variant = 'defaults' | 'fast';

export interface SystemConfig {
  readonly system: SystemName;
  readonly variant: Variant;
}

export function configLabel(config: SystemConfig): string {
  return `${config.system} (${config.variant})`;
}

export interface Adapter {
  readonly config: SystemConfig;
  /** A fresh database (dropped and recreated) with the system's schema, ready for `mode`. */
  setup(mode: Mode): Promise<void>;
  /** Connects to the database `setup` made (in a worker process). */
  connect(mode: Mode): Promise<void>;
  enqueueOne(job: Job, mode: Mode): Promise<void>;
  enqueueBulk(jobs: readonly Job[], mode: Mode): Promise<void>;
  /** Workers in this process; for Usher also what admits (the executor) when `withServices`. */
  startWorkers(settings: WorkerSettings): Promise<RunningWorkers>;
  /** Usher's executor (admission); a no-op for the peers, whose workers need nothing else. */
  startServices(): Promise<RunningWorkers>;
  /** Jobs not yet finished. */
  remaining(): Promise<number>;
  close(): Promise<void>;
}
