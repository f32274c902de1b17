/** Usher through its public TypeScript API: plain INSERTs, embedded Worker and Executor. */
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createLogger } from '../../src/log.ts';
import { Executor, migrate, Worker } from '../../src/index.ts';
import type { LoadedAction } from '../../src/worker/packs.ts';
import { recreateDatabase, databaseUrl } from '../db.ts';
import type { Adapter, Job, Mode, RunningWorkers, SystemConfig, WorkerSettings } from './types.ts';

const DATABASE = 'bench_usher';
const ACTION = 'bench.noop';
const log = createLogger('silent');
const root = fileURLToPath(new URL('../../', import.meta.url));
const cliPath = `${root}bin/usher.js`;
let compiled = false;

/**
 * Builds dist/ once per benchmark process: bin/usher.js runs it, as a deployment does, only when
 * it is newer than every source file, and otherwise runs the sources under the TypeScript loader.
 */
export function compileOnce(): void {
  if (compiled) return;
  execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], { cwd: root });
  compiled = true;
}

export class UsherAdapter implements Adapter {
  private pool: pg.Pool | undefined;
  private apiUrl: string | undefined;
  private readonly url = databaseUrl(DATABASE);

  constructor(readonly config: SystemConfig) {}

  async setup(mode: Mode): Promise<void> {
    await recreateDatabase(DATABASE);
    this.pool = this.producerPool();
    await migrate(this.pool, log);
    await this.pool.query(`insert into usher.actions (ref) values ($1)`, [ACTION]);
    const threshold = mode.kind === 'serial' || mode.kind === 'lanes' ? 1 : mode.kind === 'limit' ? mode.threshold : null;
    if (threshold !== null) {
      await this.pool.query(
        `insert into usher.policies (ref, action_ref, threshold, parameters, max_queue_length) values ('bench', $1, $2, $3, 100000000)`,
        [ACTION, threshold, mode.kind === 'lanes' ? ['lane'] : []],
      );
    }
  }

  async connect(): Promise<void> {
    this.pool = this.producerPool();
  }

  /** Producers from now on enqueue without the wake-up NOTIFY (`usher.enqueue_wakeup = off`). */
  async withoutEnqueueWakeup(): Promise<void> {
    await this.pool?.end();
    this.pool = this.producerPool('-c usher.enqueue_wakeup=off');
  }

  private producerPool(options?: string): pg.Pool {
    const pool = new pg.Pool({ connectionString: this.url, max: 12, application_name: 'bench-producer', options });
    // pool.end() resolves before its connections have closed, and the next run drops the database
    // WITH (FORCE): a connection terminated then (57P01) is expected, not a failure of the run.
    pool.on('error', () => undefined);
    pool.on('connect', (client) => client.on('error', () => undefined));
    return pool;
  }

  /** The enqueue a user writes in psql. */
  async enqueueOne(job: Job): Promise<void> {
    await this.pool!.query(`insert into usher.executions (action_ref, params) values ($1, $2)`, [ACTION, job]);
  }

  async enqueueBulk(jobs: readonly Job[]): Promise<void> {
    await this.pool!.query(
      `insert into usher.executions (action_ref, params) select $1, p from unnest($2::jsonb[]) with ordinality as t (p, n) order by n`,
      [ACTION, jobs.map((job) => JSON.stringify(job))],
    );
  }

  async startWorkers(settings: WorkerSettings): Promise<RunningWorkers> {
    const action: LoadedAction = {
      ref: ACTION,
      file: 'bench',
      handler: async (params) => {
        await settings.handler(params as unknown as Job);
        return null;
      },
    };
    const worker = new Worker({
      databaseUrl: this.url,
      actions: [action],
      concurrency: settings.concurrency,
      // fast: claims ahead like graphile-worker's local queue of 500.
      prefetch: this.config.variant === 'fast' ? 500 : 0,
      leaseSeconds: 60,
      pollIntervalMs: 1000,
      shutdownGraceSeconds: 5,
      abortGraceSeconds: 1,
    }, log);
    await worker.start();
    return { stop: () => worker.stop() };
  }

  async startServices(): Promise<RunningWorkers> {
    const executor = new Executor({
      databaseUrl: this.url,
      name: 'bench',
      leaseSeconds: 60,
      pollIntervalMs: 1000,
      sweepIntervalMs: 1000,
      idleLaneSeconds: 300,
    }, log);
    executor.start();
    return { stop: () => executor.stop() };
  }

  /**
   * `usher api` in a process of its own (as deployed), on a port it picks; enqueue through it with
   * enqueueOneByApi. Keep-alive connections, as a client in production would hold.
   */
  async startApi(): Promise<RunningWorkers> {
    compileOnce();
    const child = spawn(process.execPath, [cliPath, 'api', '--port', '0'], {
      env: { ...process.env, DATABASE_URL: this.url, USHER_LOG_LEVEL: 'info', USHER_API_TOKENS: '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    if (process.env.API_LOG) child.stdout!.on('data', (c: Buffer) => process.stderr.write(c));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    this.apiUrl = await new Promise<string>((resolve, reject) => {
      let buffered = '';
      const readListening = (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const listening = buffered.split('\n').map((line) => /"event":"api:listening".*?"url":"([^"]+)"/.exec(line)?.[1]).find(Boolean);
        if (!listening) return;
        // Its request logs are read and dropped from now on: this process runs the measured
        // worker, and scanning a growing buffer on every log line would be measured with it.
        child.stdout!.off('data', readListening);
        child.stdout!.resume();
        resolve(listening);
      };
      child.stdout!.on('data', readListening);
      child.once('exit', (code) => reject(new Error(`usher api exited (${code}) before listening`)));
    });
    return {
      stop: async () => {
        child.kill('SIGTERM');
        await exited;
        this.apiUrl = undefined;
      },
    };
  }

  async enqueueOneByApi(job: Job): Promise<void> {
    const response = await fetch(`${this.apiUrl}/api/v1/executions/execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ action_ref: ACTION, parameters: job }),
    });
    if (response.status !== 201) throw new Error(`POST /executions/execute answered ${response.status}: ${await response.text()}`);
  }

  async remaining(): Promise<number> {
    const { rows } = await this.pool!.query<{ n: string }>(`select count(*) as n from usher.executions where completed_at is null`);
    return Number(rows[0]!.n);
  }

  async close(): Promise<void> {
    await this.pool?.end();
    this.pool = undefined;
  }
}
