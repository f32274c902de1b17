/**
 * BullMQ 6 on its PostgreSQL backend (`createPostgresBackend`, LISTEN/NOTIFY wake-ups, fused
 * complete-and-fetch). Serial mode: global concurrency 1 on the queue; a threshold: global
 * concurrency N. Lanes need groups, which are BullMQ Pro only: not run.
 */
import { createPostgresBackend, withBackend } from 'bullmq';
import { databaseUrl, recreateDatabase } from '../db.ts';
import type { Adapter, Job, Mode, RunningWorkers, SystemConfig, WorkerSettings } from './types.ts';

const DATABASE = 'bench_bullmq';
const QUEUE = 'noop';
const { Queue, Worker } = withBackend(createPostgresBackend);

export class BullmqAdapter implements Adapter {
  private queue: InstanceType<typeof Queue> | undefined;
  private readonly url = databaseUrl(DATABASE);

  constructor(readonly config: SystemConfig) {}

  private connection(migrate: boolean) {
    return { connectionString: this.url, max: 12, migrate };
  }

  async setup(mode: Mode): Promise<void> {
    if (mode.kind === 'lanes') throw new Error('unsupported: per-group concurrency is BullMQ Pro only');
    await recreateDatabase(DATABASE);
    this.queue = new Queue(QUEUE, { connection: this.connection(true) });
    await this.queue.waitUntilReady();
    if (mode.kind === 'serial') await this.queue.setGlobalConcurrency(1);
    if (mode.kind === 'limit') await this.queue.setGlobalConcurrency(mode.threshold);
  }

  async connect(): Promise<void> {
    this.queue = new Queue(QUEUE, { connection: this.connection(false) });
    await this.queue.waitUntilReady();
  }

  async enqueueOne(job: Job): Promise<void> {
    await this.queue!.add(QUEUE, job);
  }

  async enqueueBulk(jobs: readonly Job[]): Promise<void> {
    for (let i = 0; i < jobs.length; i += 1000) {
      await this.queue!.addBulk(jobs.slice(i, i + 1000).map((job) => ({ name: QUEUE, data: job })));
    }
  }

  async startWorkers(settings: WorkerSettings): Promise<RunningWorkers> {
    const worker = new Worker(QUEUE, async (job) => {
      await settings.handler(job.data as Job);
    }, { connection: this.connection(false), concurrency: settings.concurrency });
    worker.on('error', () => undefined);
    await worker.waitUntilReady();
    return { stop: () => worker.close() };
  }

  async startServices(): Promise<RunningWorkers> {
    return { stop: async () => undefined };
  }

  async remaining(): Promise<number> {
    const counts = await this.queue!.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    return Object.values(counts).reduce((sum, n) => sum + n, 0);
  }

  async close(): Promise<void> {
    await this.queue?.close();
    this.queue = undefined;
  }
}
