/**
 * 9. Memory of the product's own worker process: `usher worker` (bin/usher.js, compiled dist/ as
 * a deployment runs it) at concurrency 50 draining no-op executions; its resident set is sampled
 * from /proc. Scenario 1's RSS column is a harness process with the TypeScript loader in it.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { compileOnce } from '../adapters/usher.ts';
import { databaseUrl } from '../db.ts';
import { measure, type RunContext, type ScenarioResult } from '../stats.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const CONCURRENCY = 50;

function residentBytes(pid: number): number {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Number(kb) * 1024 : 0;
  } catch {
    return 0;
  }
}

export async function workerMemory(ctx: RunContext): Promise<ScenarioResult> {
  const total = ctx.quick ? 5_000 : 50_000;
  const configs = ctx.configs.filter((config) => config.system === 'usher');
  compileOnce();
  const rows = await measure(ctx, `usher worker × ${CONCURRENCY}`, configs, async (adapter, config) => {
    await adapter.setup({ kind: 'free' });
    await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq })), { kind: 'free' });
    const url = databaseUrl('bench_usher');
    const child = spawn(process.execPath, [`${root}bin/usher.js`, 'worker', '--packs', `${root}bench/packs`, '--concurrency', String(CONCURRENCY)], {
      env: { ...process.env, DATABASE_URL: url, USHER_LOG_LEVEL: 'warn', USHER_WORKER_PREFETCH: config.variant === 'fast' ? '500' : '0' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    let maxRss = 0;
    const sampler = setInterval(() => { maxRss = Math.max(maxRss, residentBytes(child.pid!)); }, 20);
    const started = performance.now();
    const deadline = started + 120_000;
    let left = total;
    try {
      while (left > 0 && performance.now() < deadline && child.exitCode === null) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        left = Number((await pool.query<{ n: string }>(`select count(*) as n from usher.executions where completed_at is null`)).rows[0]!.n);
      }
      const elapsedMs = performance.now() - started;
      if (left > 0) throw new Error(`usher worker left ${left} of ${total} unfinished`);
      return { values: { rss_mb: maxRss / 2 ** 20, rate: total / (elapsedMs / 1000) } };
    } finally {
      clearInterval(sampler);
      child.kill('SIGTERM');
      await exited;
      await pool.end();
    }
  });
  return {
    id: 's9',
    title: `9. Memory of \`usher worker\` (${total.toLocaleString('en')} no-op executions, concurrency ${CONCURRENCY}, compiled dist/)`,
    notes: [
      'max RSS: the largest resident set of the worker process, sampled every 20 ms from /proc while it drains; the rate includes its start.',
      'fast: USHER_WORKER_PREFETCH=500. Target of issue 6: under 150 MB.',
    ],
    metrics: [
      { key: 'rss_mb', label: 'max RSS MB', better: 'lower', digits: 0 },
      { key: 'rate', label: 'exec/s', better: 'higher' },
    ],
    rows,
  };
}
