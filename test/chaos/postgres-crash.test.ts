/**
 * Scenario 14 (RELIABILITY T09): Postgres itself crashes under load and comes back. The server is
 * an embedded one of this file's own, whatever DATABASE_URL says, so that it can be taken down:
 * SIGQUIT to the postmaster is an immediate shutdown (`pg_ctl stop -m immediate`), with no
 * checkpoint, so the restart replays the WAL as after a crash. The processes must reconnect by
 * themselves, lose nothing, run nothing twice, and take back by lease what was running.
 */
import type pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startOwnServer, type OwnServer } from '../support/own-server.ts';
import { killAll, startExecutor, type UsherProcess } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, installAudit, runLog, scale, startChaosWorker, waitAllEnded, type RunLog } from './support.ts';

const COUNT = scale(600, 3000);
const CRASHES = scale(2, 6);
const LEASE_SECONDS = 3;

let server: OwnServer;
let pool: pg.Pool;
let runs: RunLog;

beforeAll(async () => {
  server = await startOwnServer('crash');
  pool = server.pool;
  await installAudit(pool);
  await pool.query(`insert into usher.actions (ref, max_retries, retry_delay_seconds) values ('c.work', 3, 0.1)`);
  runs = runLog();
});

afterAll(async () => {
  await killAll();
  await server?.stop();
  runs?.remove();
});

/** A query that outlives a crash: the pool's connections from before it fail once each. */
async function query<T extends pg.QueryResultRow>(sql: string, values: unknown[] = []): Promise<T[]> {
  return waitFor(async () => (await pool.query<T>(sql, values)).rows, { what: sql, timeoutMs: 20_000 });
}

/**
 * Runs `count` executions over 3 lanes of threshold 5 on an executor and two workers (3 s lease),
 * crashing Postgres `crashes` times along the way, each time for `outageMs`; then checks that all
 * completed exactly once by the processes started first, in lane order, with the invariants whole.
 */
async function crashUnderLoad(options: { count: number; crashes: number; outageMs: number; lanePrefix: string }) {
  const { count, crashes, outageMs } = options;
  const env = { USHER_LEASE_SECONDS: String(LEASE_SECONDS), CHAOS_RUN_LOG: runs.path, USHER_LOG_LEVEL: 'debug' };
  const procs: UsherProcess[] = await Promise.all([
    startExecutor(server.url, env),
    startChaosWorker(server.url, { concurrency: 4, name: `${options.lanePrefix}a`, env }),
    startChaosWorker(server.url, { concurrency: 4, name: `${options.lanePrefix}b`, env }),
  ]);
  const range = await enqueueSpread(pool, 'c.work', count, { lanes: 3, ms: [5, 40], prefix: options.lanePrefix });
  const completed = async () => (await query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [range.first, range.last]))[0]!.n;
  const downMs: number[] = [];
  for (let crash = 1; crash <= crashes; crash += 1) {
    await waitFor(async () => (await completed()) >= (count * crash) / (crashes + 1), { what: `${crash}/${crashes + 1} completed`, timeoutMs: 60_000 });
    downMs.push(await server.crashAndRestart(outageMs));
  }
  await waitFor(async () => (await query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and completed_at is null`, [range.first, range.last]))[0]!.n === 0,
  { what: 'every execution ended', timeoutMs: 120_000, intervalMs: 250 });
  expect(await waitAllEnded(pool, range, 1000)).toEqual({ completed: count });

  // The processes started before the first crash are the ones that finished the work.
  for (const proc of procs) expect(proc.child.exitCode, proc.lines.filter((line) => !line.includes('"debug"')).slice(-15).join('\n')).toBeNull();
  for (const proc of procs) expect(events(proc, 'listener:reconnecting').length).toBeGreaterThanOrEqual(crashes);
  // Only an attempt whose claim or run was cut by a crash is retried, and only as abandoned.
  const attempts = await query<{ status: string; n: number }>(
    `select status, count(*)::int as n from usher.execution_attempts where execution_id between $1 and $2 group by status order by status`,
    [range.first, range.last]);
  expect(attempts.filter((row) => row.status !== 'abandoned')).toEqual([]);
  await expectSoundQueue(pool, range);
  await expectNoDuplicateRuns(pool, runs, range);
  const workers = procs.slice(1);
  const abandonedMarks = workers.flatMap((worker) => events(worker, 'execution:mark_abandoned'));
  console.info(`postgres crashed ${crashes} times, down ${downMs.map(Math.round).join(', ')} ms; attempts taken back by lease: ${JSON.stringify(attempts)}; ` +
    `marks fenced (committed before a crash, retried after): ${workers.flatMap((worker) => events(worker, 'execution:mark_fenced')).length}; ` +
    `marks given up when the lease ran out: ${abandonedMarks.length}`);
  await killAll();
  return { abandonedAttempts: attempts.find((row) => row.status === 'abandoned')?.n ?? 0, abandonedMarks: abandonedMarks.length };
}

it(`completes ${COUNT} executions exactly once while Postgres crashes ${CRASHES} times under load`, { timeout: scale(180_000, 600_000) }, async () => {
  await usePolicy(pool, 'c.work', 'chaos-crash', 5);
  await crashUnderLoad({ count: COUNT, crashes: CRASHES, outageMs: 1000, lanePrefix: 'short' });
});

it('keeps every process up through an outage twice as long as a lease, and runs again what was running', { timeout: 180_000 }, async () => {
  await usePolicy(pool, 'c.work', 'chaos-crash-long', 5);
  const { abandonedAttempts, abandonedMarks } = await crashUnderLoad({ count: 300, crashes: 1, outageMs: 2 * LEASE_SECONDS * 1000, lanePrefix: 'long' });
  // The executions running at the crash outlived their leases: each was taken back and run again.
  expect(abandonedAttempts).toBeGreaterThanOrEqual(1);
  // A worker holding a finished execution gave up its mark when the lease could have run out, and stayed up.
  expect(abandonedMarks).toBeGreaterThanOrEqual(1);
});
