/**
 * A worker with USHER_WORKER_PREFETCH claims beyond its concurrency and holds those executions until
 * a slot frees. It still runs no more than its concurrency at once, starts them in claim order,
 * settles a cancelled or lost one without running it, and hands unstarted ones back on shutdown.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startWorker, type UsherProcess } from '../support/processes.ts';
import { endLeftovers, events, parseLine, workerIdOf, type Row } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`insert into usher.actions (ref) values ('t.work') on conflict do nothing`);
});

afterEach(async () => {
  await killAll();
  await endLeftovers(t.pool);
  await t.pool.query('delete from usher.executions');
});

afterAll(() => t.drop());

async function q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T[]> {
  return (await t.pool.query<T>(sql, values)).rows;
}

/** Inserts executions of t.work, one per entry of `ms`, in one statement; their ids in order. */
async function enqueueWork(ms: number[]): Promise<string[]> {
  const rows = await q<{ id: string }>(
    `insert into usher.executions (action_ref, params)
     select 't.work', jsonb_build_object('n', n, 'ms', ms) from unnest($1::int[]) with ordinality as t (ms, n) order by n
     returning id`,
    [ms],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

function prefetchingWorker(concurrency: number, prefetch: number, name: string): Promise<UsherProcess> {
  return startWorker(t.url, { concurrency, name, env: { USHER_WORKER_PREFETCH: String(prefetch), USHER_LOG_LEVEL: 'debug' } });
}

/** Handler starts in the order the worker logged them, and the most handlers running at once (debug log lines). */
function startsAndOverlap(worker: UsherProcess): { started: string[]; maxRunning: number } {
  const started: string[] = [];
  let running = 0;
  let maxRunning = 0;
  for (const line of worker.lines.map(parseLine)) {
    if (line?.event === 'execution:started') {
      started.push(String(line.execution_id));
      running += 1;
      maxRunning = Math.max(maxRunning, running);
    } else if (line?.event === 'execution:returned') {
      running -= 1;
    }
  }
  return { started, maxRunning };
}

describe('worker prefetch', () => {
  it('drains with no more than its concurrency running, starting executions in claim order', async () => {
    const ids = await enqueueWork(Array.from({ length: 30 }, () => 15));
    const worker = await prefetchingWorker(3, 5, 'prefetch-drain');
    await waitFor(async () => (await q(`select 1 from usher.executions where status = 'completed'`)).length === 30, { what: '30 completed' });
    await waitFor(() => events(worker, 'execution:completed').length === 30, { what: '30 completion log lines' });

    const { started, maxRunning } = startsAndOverlap(worker);
    expect(started).toEqual(ids);
    expect(maxRunning).toBe(3);
    expect(await q(`select distinct worker_id, attempt from usher.executions`)).toEqual([{ worker_id: workerIdOf(worker), attempt: 1 }]);
  });

  it('holds up to concurrency + prefetch, and on shutdown hands back at once the ones it never started', async () => {
    const ids = await enqueueWork([1500, 1500, 0, 0, 0, 0, 0, 0]);
    const worker = await prefetchingWorker(2, 3, 'prefetch-stop');
    const workerId = workerIdOf(worker);
    // Two run (1.5 s each); three more are claimed and wait; three stay in the queue.
    await waitFor(async () => (await q(`select 1 from usher.executions where status = 'running'`)).length === 5, { what: '5 running' });
    expect(await q(`select id, status, worker_id from usher.executions order by id`)).toEqual(ids.map((id, index) => (
      index < 5 ? { id, status: 'running', worker_id: workerId } : { id, status: 'scheduled', worker_id: null })));
    // The worker's log lines reach the test after the rows change: wait for both starts to be logged.
    await waitFor(() => startsAndOverlap(worker).started.length >= 2, { what: '2 starts logged' });
    expect(startsAndOverlap(worker).started).toEqual(ids.slice(0, 2));

    worker.kill('SIGTERM');
    // The three waiting ones are back before the two running ones have finished.
    await waitFor(async () => (await q(`select 1 from usher.executions where status = 'scheduled'`)).length === 6, { what: '3 handed back' });
    expect(await q(`select count(*)::int as n from usher.executions where status = 'running'`)).toEqual([{ n: 2 }]);
    await worker.exited;
    expect(await q(`select id, status, attempt, worker_id from usher.executions order by id`)).toEqual(ids.map((id, index) => (
      index < 2 ? { id, status: 'completed', attempt: 1, worker_id: workerId } : { id, status: 'scheduled', attempt: 0, worker_id: null })));
    expect(startsAndOverlap(worker).started).toEqual(ids.slice(0, 2));
  });

  it('settles a cancelled execution that waits for a slot at once, without running it', async () => {
    const [long, cancelled, last] = await enqueueWork([1500, 0, 0]);
    const worker = await prefetchingWorker(1, 2, 'prefetch-cancel');
    await waitFor(async () => (await q(`select 1 from usher.executions where status = 'running'`)).length === 3, { what: '3 running' });

    await q(`select usher.cancel_execution($1, 'not needed')`, [cancelled]);
    await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [cancelled]))[0]!.status === 'cancelled', { what: 'cancelled' });
    // The long one is still running: the cancel did not wait for its slot.
    expect(await q(`select id, status from usher.executions order by id`)).toEqual([
      { id: long, status: 'running' }, { id: cancelled, status: 'cancelled' }, { id: last, status: 'running' },
    ]);
    await waitFor(async () => (await q(`select 1 from usher.executions where status = 'completed'`)).length === 2, { what: '2 completed' });
    expect(startsAndOverlap(worker).started).toEqual([long, last]);
  });
});
