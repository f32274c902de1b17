/**
 * Enqueue-to-start latency of a worker behind PgBouncer in transaction mode, which finds work by
 * polling (RELIABILITY T11: "latency within the poll interval"). An executor connected directly
 * admits; one worker (USHER_WORKER_POOL_MODE=transaction) claims through PgBouncer; 100 single
 * INSERTs 37 ms apart. Needs the pgbouncer binary. Usage: npx tsx bench/pgbouncer-latency.ts [poll ms]
 */
import pg from 'pg';
import { migrate } from '../src/db/migrator.ts';
import { createLogger } from '../src/log.ts';
import { findPgbouncer, startPgbouncer } from '../test/support/pgbouncer.ts';
import { killAll, startExecutor, startWorker } from '../test/support/processes.ts';
import { dropDatabase, recreateDatabase } from './db.ts';

const pollMs = process.argv[2] ?? '100';
const binary = findPgbouncer();
if (!binary) throw new Error('pgbouncer is not installed (Debian: apt-get install pgbouncer)');
const url = await recreateDatabase('bench_pgbouncer');
const pool = new pg.Pool({ connectionString: url, max: 2 });
await migrate(pool, createLogger('silent'));
const bouncer = await startPgbouncer(binary, url, 'transaction');
try {
  await startExecutor(url);
  await startWorker(bouncer.url, { concurrency: 4, name: 'pooled', env: { USHER_WORKER_POOL_MODE: 'transaction', USHER_POLL_INTERVAL_MS: pollMs } });
  for (let i = 0; i < 100; i += 1) {
    await pool.query(`insert into usher.executions (action_ref, params) values ('t.other', '{}')`);
    await new Promise((resolve) => setTimeout(resolve, 37));
  }
  for (;;) {
    const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from usher.executions where status <> 'completed'`);
    if (rows[0]!.n === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const { rows } = await pool.query<{ p50: number; p99: number; max: number }>(`
    select percentile_cont(0.5) within group (order by ms) as p50, percentile_cont(0.99) within group (order by ms) as p99, max(ms) as max
    from (select extract(epoch from started_at - created_at)::float8 * 1000 as ms from usher.executions) s`);
  const { p50, p99, max } = rows[0]!;
  console.log(`poll ${pollMs} ms, worker through PgBouncer in transaction mode: enqueue to start p50 ${p50.toFixed(1)}, p99 ${p99.toFixed(1)}, max ${max.toFixed(1)} ms`);
} finally {
  await killAll();
  await bouncer.stop();
  await pool.end();
  await dropDatabase('bench_pgbouncer');
}
