/**
 * graphile-worker: named queues are its serial mode (one job of a queue at a time). "fast" is its
 * documented batching: a local queue of 500 jobs, batched completion (completeJobBatchDelay 0),
 * and a 100 ms poll; both configurations wake on LISTEN/NOTIFY.
 */
import { Logger, makeWorkerUtils, run, runMigrations, type WorkerUtils } from 'graphile-worker';
import pg from 'pg';
import { databaseUrl, recreateDatabase } from '../db.ts';
import type { Adapter, Job, Mode, RunningWorkers, SystemConfig, WorkerSettings } from './types.ts';

const DATABASE = 'bench_graphile';
const TASK = 'noop';
const silent = new Logger(() => () => undefined);

function queueName(job: Job, mode: Mode): string | undefined {
  if (mode.kind === 'serial') return 'serial';
  if (mode.kind === 'lanes') return `lane-${job.lane}`;
  return undefined;
}

export class GraphileWorkerAdapter implements Adapter {
  private utils: WorkerUtils | undefined;
  private pool: pg.Pool | undefined;
  private readonly url = databaseUrl(DATABASE);

  constructor(readonly config: SystemConfig) {}

  async setup(mode: Mode): Promise<void> {
    await recreateDatabase(DATABASE);
    await runMigrations({ connectionString: this.url, logger: silent });
    await this.connect(mode);
  }

  async connect(_mode: Mode): Promise<void> {
    this.pool = new pg.Pool({ connectionString: this.url, max: 12, application_name: 'bench-producer' });
    this.pool.on('error', () => undefined);
    this.pool.on('connect', (client) => client.on('error', () => undefined));
    this.utils = await makeWorkerUtils({ pgPool: this.pool, logger: silent });
  }

  async enqueueOne(job: Job, mode: Mode): Promise<void> {
    const queue = queueName(job, mode);
    await this.utils!.addJob(TASK, { ...job }, queue ? { queueName: queue } : {});
  }

  async enqueueBulk(jobs: readonly Job[], mode: Mode): Promise<void> {
    await this.utils!.addJobs(jobs.map((job) => {
      const queue = queueName(job, mode);
      return { identifier: TASK, payload: { ...job }, ...(queue ? { queueName: queue } : {}) };
    }));
  }

  async startWorkers(settings: WorkerSettings): Promise<RunningWorkers> {
    const fast = this.config.variant === 'fast';
    const runner = await run({
      connectionString: this.url,
      concurrency: settings.concurrency,
      // Its advice is max(10, concurrency + 2); capped at 12 so 4 processes fit in max_connections = 100.
      maxPoolSize: Math.min(12, Math.max(10, settings.concurrency + 2)),
      noHandleSignals: true,
      logger: silent,
      ...(fast ? { pollInterval: 100 } : {}),
      ...(fast ? { preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } } : {}),
      taskList: {
        [TASK]: async (payload) => {
          await settings.handler(payload as Job);
        },
      },
    });
    return {
      // Its runner can stop itself (say, after its pool saw an error); the jobs it ran are counted.
      stop: () => runner.stop().catch((error: Error) => {
        if (!/already stopped/.test(error.message)) throw error;
      }),
    };
  }

  async startServices(): Promise<RunningWorkers> {
    return { stop: async () => undefined };
  }

  async remaining(): Promise<number> {
    const { rows } = await this.pool!.query<{ n: string }>(`select count(*) as n from graphile_worker._private_jobs`);
    return Number(rows[0]!.n);
  }

  async close(): Promise<void> {
    await this.utils?.release();
    await this.pool?.end();
    this.utils = undefined;
    this.pool = undefined;
  }
}
