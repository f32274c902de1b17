/**
 * RELIABILITY T18: how many transaction IDs Usher burns. XIDs are counted cluster-wide, so this
 * file runs on a Postgres of its own with nothing else on it: the difference of the next XID to
 * be assigned before and after is Usher's alone. Wraparound is what an XID budget is about;
 * /metrics reports the database's XID age (usher_database_xid_age).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startOwnServer, type OwnServer } from '../support/own-server.ts';
import { killAll, startExecutor, startWorker } from '../support/processes.ts';
import { usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

/**
 * The budget: one writing transaction per execution at most, enqueue included (a claim, a
 * completion and the next admission share one, and a batch of completions shares one); here,
 * with batches, it measured about a tenth of that.
 */
const XIDS_PER_EXECUTION = 1;
const LANED = 1000;
const FREE = 500;
const IDLE_MS = 4000;

let server: OwnServer;

beforeAll(async () => {
  server = await startOwnServer('xid');
  await server.pool.query(`insert into usher.actions (ref) values ('t.work'), ('t.other')`);
  await usePolicy(server.pool, 't.work', 'xid-lanes', 5);
});

afterAll(async () => {
  await killAll();
  await server?.stop();
});

async function nextXid(): Promise<number> {
  const { rows } = await server.pool.query<{ next: string }>(`select pg_snapshot_xmax(pg_current_snapshot())::text as next`);
  return Number(rows[0]!.next);
}

it(`burns at most ${XIDS_PER_EXECUTION} XID per execution under load, and none while idle but for heartbeats`, { timeout: 120_000 }, async () => {
  await startExecutor(server.url);
  await startWorker(server.url, { concurrency: 10, name: 'xid' });

  // Idle: a worker polling every 200 ms, an executor admitting and sweeping every 200 ms.
  const idleFrom = await nextXid();
  const { rows: [beatsBefore] } = await server.pool.query<{ at: Date }>(`select heartbeat_at as at from usher.workers`);
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS)); // the window measured, not a wait for anything
  const idleXids = (await nextXid()) - idleFrom;
  const { rows: [beatsAfter] } = await server.pool.query<{ at: Date }>(`select heartbeat_at as at from usher.workers`);
  // A heartbeat writes the worker's row (one XID); at the default 30 s lease it comes every 10 s.
  const heartbeats = beatsAfter!.at.getTime() === beatsBefore!.at.getTime() ? 0 : 1;
  expect(idleXids).toBeLessThanOrEqual(heartbeats);

  const loadFrom = await nextXid();
  await server.pool.query(`insert into usher.executions (action_ref, params)
    select 't.work', jsonb_build_object('lane', 'l' || (g % 3), 'n', g) from generate_series(1, ${LANED}) g`);
  await server.pool.query(`insert into usher.executions (action_ref, params) select 't.other', jsonb_build_object('n', g) from generate_series(1, ${FREE}) g`);
  await waitFor(async () => (await server.pool.query(`select 1 from usher.executions where status <> 'completed' limit 1`)).rowCount === 0,
    { what: 'every execution completed', timeoutMs: 100_000, intervalMs: 100 });
  const perExecution = ((await nextXid()) - loadFrom) / (LANED + FREE);
  expect(perExecution).toBeLessThanOrEqual(XIDS_PER_EXECUTION);
  expect((await server.pool.query(`select count(*)::int as n from usher.executions where status = 'completed'`)).rows).toEqual([{ n: LANED + FREE }]);
  console.info(`XIDs: ${idleXids} in ${IDLE_MS} ms idle (heartbeats in the window: ${heartbeats}); ${perExecution.toFixed(3)} per execution under load`);
});
