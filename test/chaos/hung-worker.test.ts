/**
 * Scenario 4: a worker whose event loop is blocked (a handler that hangs synchronously) for longer
 * than its lease. The execution is taken back and retried elsewhere; when the hung worker wakes its
 * completion is refused (fencing), and the recorded result is the new attempt's.
 * (A handler that never settles while the event loop runs is ended by its timeout:
 * test/integration/worker-behaviour.test.ts, "timeout".)
 */
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, eventsWhenLogged, usePolicy, workerIdOf } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { startChaosWorker, useChaosDatabase } from './support.ts';

const LEASE_SECONDS = 1;
// The cap of the block: the test wakes the hung worker itself (wakeFile) once the retry is done.
// A fixed 5 s block raced the healthy worker's start on a loaded machine: when the healthy worker
// came up after the hung one woke, the woken worker claimed the retry itself.
const BLOCK_MS = 60_000;

const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries, retry_delay_seconds) values ('c.block', 1, 0.1), ('c.work', 0, 1)`);

it('takes back an execution whose worker hangs past its lease, runs it again elsewhere, and refuses the hung worker\'s late completion', async () => {
  await usePolicy(chaos.t.pool, 'c.block', 'chaos-hung', 1);
  const env = { USHER_LEASE_SECONDS: String(LEASE_SECONDS) };
  await startExecutor(chaos.t.url, env);
  const hung = await startChaosWorker(chaos.t.url, { concurrency: 2, name: 'hung', env });
  const hungId = workerIdOf(hung);
  const wakeFile = join(tmpdir(), `usher-hung-${process.pid}-${Date.now()}`);
  const { rows: [x] } = await chaos.t.pool.query(
    `insert into usher.executions (action_ref, params) values ('c.block', $1) returning id, lane_key`,
    [{ lane: 'hung', ms: BLOCK_MS, until_file: wakeFile }]);
  await waitFor(async () => (await chaos.t.pool.query(`select status from usher.executions where id = $1`, [x.id])).rows[0].status === 'running',
    { what: 'x running on the hung worker' });
  const healthy = await startChaosWorker(chaos.t.url, { concurrency: 2, name: 'healthy', env });
  const healthyId = workerIdOf(healthy);

  // While the event loop is blocked, no heartbeat goes out: the lease runs out, the attempt is
  // abandoned and retried, and the healthy worker completes attempt 2.
  const done = await waitFor(async () => (await chaos.t.pool.query(
    `select status, attempt, worker_id, result, completed_at from usher.executions where id = $1 and status = 'completed'`, [x.id])).rows[0],
  { what: 'x completed by attempt 2', timeoutMs: 15_000 });
  expect(done).toMatchObject({ status: 'completed', attempt: 2, worker_id: healthyId, result: { attempt: 2, pid: healthy.child.pid } });
  const { rows: history } = await chaos.t.pool.query(
    `select attempt, status, worker_id, error, extract(epoch from ended_at - started_at) as held from usher.execution_attempts where execution_id = $1`, [x.id]);
  expect(history).toEqual([{ attempt: 1, status: 'abandoned', worker_id: hungId, error: `lease expired: worker ${hungId} stopped renewing it`, held: expect.anything() }]);
  const heldSeconds = Number(history[0].held);
  expect(heldSeconds).toBeGreaterThanOrEqual(LEASE_SECONDS * 0.9);
  expect(heldSeconds).toBeLessThanOrEqual(2 * LEASE_SECONDS + 1);

  // The hung worker wakes, its handler returns, and it reports with the old lease token: refused.
  writeFileSync(wakeFile, '');
  const [fenced] = await eventsWhenLogged(hung, 'execution:mark_fenced', 1);
  rmSync(wakeFile);
  expect(fenced).toMatchObject({ execution_id: x.id, worker_id: hungId, attempt: 1, outcome: 'completed' });
  expect(events(hung, 'execution:completed')).toEqual([]);
  expect((await chaos.t.pool.query(`select status, attempt, worker_id, result, completed_at from usher.executions where id = $1`, [x.id])).rows[0])
    .toEqual(done);
  expect((await chaos.t.pool.query(`select status, attempt, worker_id from public.chaos_endings where id = $1`, [x.id])).rows)
    .toEqual([{ status: 'completed', attempt: 2, worker_id: healthyId }]);

  // The hung worker survived and takes work again.
  expect(hung.child.exitCode).toBeNull();
  await healthy.kill('SIGKILL');
  await healthy.exited;
  const { rows: [y] } = await chaos.t.pool.query(`insert into usher.executions (action_ref, params) values ('c.work', '{"n": 1}') returning id`);
  const after = await waitFor(async () => (await chaos.t.pool.query(
    `select status, worker_id from usher.executions where id = $1 and status = 'completed'`, [y.id])).rows[0], { what: 'y completed by the woken worker' });
  expect(after).toEqual({ status: 'completed', worker_id: hungId });
  expect((await chaos.t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);
  expect((await chaos.t.pool.query('select active_count from usher.lanes where lane_key = $1', [x.lane_key])).rows).toEqual([{ active_count: 0 }]);
  console.info(`hung worker: attempt 1 held ${heldSeconds.toFixed(2)} s before it was abandoned (lease ${LEASE_SECONDS} s); late completion fenced`);
});
