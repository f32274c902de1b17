/**
 * pg-boss 10: its strictest serial mode is the `singleton` queue policy (one active job per queue,
 * or per singletonKey: the lanes). It polls (no LISTEN/NOTIFY in v10). Defaults: one work() loop
 * per unit of concurrency, batchSize 1, 2 s polling. "fast": the same loops with batchSize 100 and
 * the shortest polling interval it accepts (0.5 s); under a threshold, one loop with batchSize = threshold.
 */
import PgBoss from 'pg-boss';
import { databaseUrl, recreateDatabase } from '../db.ts';
import type { Adapter, Job, Mode, RunningWorkers, SystemConfig, WorkerSettings } from './types.ts';

const DATABASE = 'bench_pgboss';
const QUEUE = 'noop';

function insertOf(job: Job, mode: Mode): PgBoss.JobInsert<Job> {
  return { name: QUEUE, data: job, ...(mode.kind === 'lanes' ? { singletonKey: `lane-${job.lane}` } : {}) };
}

export class PgBossAdapter implements Adapter {
  private boss: PgBoss | undefined;
  private readonly url = databaseUrl(DATABASE);

  constructor(readonly config: SystemConfig) {}

  async setup(mode: Mode): Promise<void> {
    await recreateDatabase(DATABASE);
    await this.connect(mode);
    const policy = mode.kind === 'serial' || mode.kind === 'lanes' ? 'singleton' : 'standard';
    await this.boss!.createQueue(QUEUE, { name: QUEUE, policy });
  }

  async connect(_mode: Mode): Promise<void> {
    const fast = this.config.variant === 'fast';
    this.boss = new PgBoss({ connectionString: this.url, max: 12, ...(fast ? { pollingIntervalSeconds: 0.5 } : {}) });
    // A singleton queue refuses a second active job with an error on fetch; keep it out of the way.
    this.boss.on('error', () => undefined);
    await this.boss.start();
  }

  async enqueueOne(job: Job, mode: Mode): Promise<void> {
    const insert = insertOf(job, mode);
    await this.boss!.send(QUEUE, job, insert.singletonKey ? { singletonKey: insert.singletonKey } : {});
  }

  async enqueueBulk(jobs: readonly Job[], mode: Mode): Promise<void> {
    await this.boss!.insert(jobs.map((job) => insertOf(job, mode)));
  }

  async startWorkers(settings: WorkerSettings): Promise<RunningWorkers> {
    const fast = this.config.variant === 'fast';
    const { concurrency, mode } = settings;
    const loops = fast && mode.kind === 'limit' ? 1 : concurrency;
    const batchSize = fast ? (mode.kind === 'limit' ? concurrency : 100) : 1;
    const ids: string[] = [];
    for (let i = 0; i < loops; i += 1) {
      ids.push(await this.boss!.work<Job>(QUEUE, { batchSize }, async (jobs) => {
        await Promise.all(jobs.map((job) => settings.handler(job.data)));
      }));
    }
    return {
      stop: async () => {
        await Promise.all(ids.map((id) => this.boss!.offWork({ id })));
      },
    };
  }

  async startServices(): Promise<RunningWorkers> {
    return { stop: async () => undefined };
  }

  async remaining(): Promise<number> {
    const db = this.boss!.getDb() as unknown as { executeSql(sql: string): Promise<{ rows: { n: string }[] }> };
    const { rows } = await db.executeSql(`select count(*) as n from pgboss.job where state < 'completed'`);
    return Number(rows[0]!.n);
  }

  async close(): Promise<void> {
    await this.boss?.stop({ graceful: false, wait: true, close: true });
    this.boss = undefined;
  }
}
