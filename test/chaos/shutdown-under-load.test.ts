/**
 * Scenario 12: SIGTERM to every worker at once under load. Each finishes or hands back every
 * execution it holds (back to scheduled, at the head of its lane, no attempt charged) and exits 0;
 * nothing is left running, and new workers finish the rest.
 */
import { expect, it } from 'vitest';
import { startExecutor, type UsherProcess } from '../support/processes.ts';
import { usePolicy, workerIdOf } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { expectSoundQueue, scale, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const COUNT = scale(120, 1000);
const WORKERS = scale(3, 6);

const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work')`);

it(`stops ${WORKERS} loaded workers with SIGTERM: every held execution finishes or is handed back, none left running`, { timeout: scale(60_000, 240_000) }, async () => {
  await usePolicy(chaos.t.pool, 'c.work', 'chaos-shutdown', 4);
  await startExecutor(chaos.t.url);
  const env = { USHER_SHUTDOWN_GRACE_SECONDS: '1', USHER_ABORT_GRACE_SECONDS: '1', CHAOS_RUN_LOG: chaos.log.path };
  const workers: UsherProcess[] = await Promise.all(
    Array.from({ length: WORKERS }, (_, i) => startChaosWorker(chaos.t.url, { concurrency: 4, name: `s${i}`, env })));
  // A mix of quick (finish within the grace) and long (must be handed back) handlers, in 4 lanes.
  const { rows } = await chaos.t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params)
     select 'c.work', jsonb_build_object('lane', 'l' || (g % 4), 'n', g, 'ms', case when g % 3 = 0 then 30000 else 100 + (g % 7) * 50 end)
     from generate_series(0, $1 - 1) g order by g returning id`, [COUNT]);
  const range = { first: rows[0]!.id, last: rows.at(-1)!.id };
  await waitFor(async () => (await chaos.t.pool.query(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [range.first, range.last])).rows[0].n >= 20,
  { what: 'some completed', timeoutMs: 30_000 });
  const { rows: heldBefore } = await chaos.t.pool.query(
    `select id, (params->>'ms')::int as ms from usher.executions where id between $1 and $2 and status = 'running'`, [range.first, range.last]);
  expect(heldBefore.length).toBeGreaterThan(0);

  for (const worker of workers) worker.kill('SIGTERM');
  const exits = await Promise.all(workers.map((worker) => worker.exited));
  expect(exits).toEqual(workers.map(() => ({ code: 0, signal: null })));

  // Nothing running, nothing abandoned; handed-back executions wait for a worker with no attempt charged.
  const { rows: states } = await chaos.t.pool.query(
    `select status, attempt, count(*)::int as n from usher.executions where id between $1 and $2 group by 1, 2 order by 1, 2`, [range.first, range.last]);
  expect(states.filter((row) => ['running', 'canceling', 'abandoned', 'failed'].includes(row.status))).toEqual([]);
  expect(states.filter((row) => row.status !== 'completed' && row.attempt !== 0)).toEqual([]);
  const { rows: heldAfter } = await chaos.t.pool.query(`select id, status from usher.executions where id = any($1)`, [heldBefore.map((row) => row.id)]);
  expect(heldAfter.filter((row) => !['completed', 'scheduled'].includes(row.status))).toEqual([]);
  const handedBack = heldAfter.filter((row) => row.status === 'scheduled').length;
  expect(handedBack).toBeGreaterThan(0);
  expect((await chaos.t.pool.query(`select status, count(*)::int as n from usher.workers where id = any($1) group by 1`, [workers.map(workerIdOf)])).rows)
    .toEqual([{ status: 'stopped', n: WORKERS }]);
  expect((await chaos.t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);

  // Fresh workers (with quick handlers) finish everything, each handed-back execution on its first charged attempt.
  await startChaosWorker(chaos.t.url, { concurrency: 8, name: 'fresh', env: { CHAOS_MS_OVERRIDE: '5', CHAOS_RUN_LOG: chaos.log.path } });
  expect(await waitAllEnded(chaos.t.pool, range, 60_000)).toEqual({ completed: COUNT });
  expect((await chaos.t.pool.query(`select count(*)::int as n from usher.executions where id between $1 and $2 and attempt <> 1`, [range.first, range.last])).rows)
    .toEqual([{ n: 0 }]);
  await expectSoundQueue(chaos.t.pool, range);
  // A handed-back execution starts again under the same attempt number; everything else started once.
  const handedBackIds = new Set(heldAfter.filter((row) => row.status === 'scheduled').map((row) => row.id));
  const starts = chaos.log.starts();
  const wrong = rows.filter(({ id }) => (starts.get(id)?.length ?? 0) !== (handedBackIds.has(id) ? 2 : 1));
  expect(wrong).toEqual([]);
  console.info(`shutdown under load: ${heldBefore.length} running at SIGTERM, ${handedBack} handed back and run again, the rest finished in the grace`);
});
