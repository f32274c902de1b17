/**
 * Scenario 18 (RELIABILITY T16): a long transaction pins the xmin horizon. Another client holds a
 * REPEATABLE READ snapshot open while Usher works: processing must go on, Usher's own sessions
 * must never sit idle in a transaction, and /metrics must show what is happening (the snapshot's
 * age, dead row versions piling up) and recover once the snapshot is gone.
 */
import { expect, it } from 'vitest';
import { createApiMetrics } from '../../src/api/metrics.ts';
import { startExecutor } from '../support/processes.ts';
import { usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, scale, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const COUNT = scale(600, 5000);

const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work')`);

it(`keeps working, never idles in a transaction, and reports the pinned snapshot while another transaction holds one`, { timeout: scale(120_000, 400_000) }, async () => {
  const { t } = chaos;
  await usePolicy(t.pool, 'c.work', 'chaos-xmin', 5);
  const metrics = createApiMetrics(t.pool);
  const gauge = async (name: string) => {
    await metrics.refresh();
    return (await metrics.registry.getSingleMetric(name)!.get()).values[0]!.value;
  };
  const env = { CHAOS_RUN_LOG: chaos.log.path };
  await startExecutor(t.url, env);
  await startChaosWorker(t.url, { concurrency: 8, name: 'a', env });

  // Usher's sessions, sampled every 50 ms while they work: none may be idle inside a transaction.
  let sampling = true;
  const idleInTransaction: string[] = [];
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await t.pool.query<{ name: string; state: string }>(
        `select application_name as name, state from pg_stat_activity
         where datname = current_database() and application_name like 'usher-%' and state like 'idle in transaction%'`);
      idleInTransaction.push(...rows.map((row) => `${row.name}: ${row.state}`));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();

  const holder = await t.connect();
  await holder.query('begin isolation level repeatable read');
  await holder.query('select count(*) from usher.executions');
  const pinnedAt = Date.now();
  try {
    const range = await enqueueSpread(t.pool, 'c.work', COUNT, { lanes: 3, ms: [0, 5] });
    expect(await waitAllEnded(t.pool, range, 100_000)).toEqual({ completed: COUNT });
    // All of it ran while the snapshot was held, which the metrics show.
    expect(await gauge('usher_oldest_snapshot_seconds')).toBeGreaterThanOrEqual((Date.now() - pinnedAt) / 1000 - 1);
    // Vacuum can remove none of the versions the run left behind while the snapshot stands.
    await t.pool.query('vacuum usher.executions');
    const deadWhilePinned = await waitFor(async () => {
      const dead = await gauge('usher_executions_dead_tuples');
      return dead >= COUNT && dead;
    }, { what: `at least ${COUNT} dead row versions reported while pinned`, timeoutMs: 20_000 });
    expect(await holder.query('select 1 as still_open')).toMatchObject({ rows: [{ still_open: 1 }] });
    await holder.query('commit');

    // Vacuumed again until it has removed them: a statement of a worker or the executor that took its
    // snapshot while the holder was still open can still be running at the first vacuum, and hold
    // the horizon where the holder left it for that moment.
    await waitFor(async () => {
      await t.pool.query('vacuum usher.executions');
      return (await gauge('usher_executions_dead_tuples')) < deadWhilePinned / 10;
    }, { what: 'dead row versions vacuumed once the snapshot is gone', timeoutMs: 20_000, intervalMs: 250 });
    expect(await gauge('usher_oldest_snapshot_seconds')).toBeLessThan(1);
    expect(await gauge('usher_database_xid_age')).toBeGreaterThan(0);
    await expectSoundQueue(t.pool, range);
    await expectNoDuplicateRuns(t.pool, chaos.log, range);
    console.info(`long transaction: ${COUNT} completed in ${((Date.now() - pinnedAt) / 1000).toFixed(1)} s under a pinned snapshot; ${deadWhilePinned} dead row versions reported while pinned`);
  } finally {
    sampling = false;
    await sampler;
  }
  expect(idleInTransaction).toEqual([]);
});
