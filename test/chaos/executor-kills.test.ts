/**
 * Scenario 2 (USHER_CHAOS=full): two executors run the whole test and one of them is SIGKILLed
 * every moment, mid-admission, and restarted, while a producer keeps adding work to 40 lanes so that
 * admission is the executors' job, not only the completions'.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, spawnUsher, startExecutor, type UsherProcess } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, FULL, installAudit, runLog, startChaosWorker, waitAllEnded } from './support.ts';

const BATCHES = 150;
const BATCH = 20;

describe.runIf(FULL)('executors SIGKILLed mid-admission', () => {
  let t: TestDatabase;
  const log = runLog();

  beforeAll(async () => {
    t = await createTestDatabase();
    await installAudit(t.pool);
    await t.pool.query(`insert into usher.actions (ref) values ('c.work')`);
  });
  afterAll(async () => {
    await killAll();
    await t.drop();
    log.remove();
  });

  it(`admits ${BATCHES * BATCH} executions of 40 lanes in order, exactly once, while one of two executors is killed every 400-900 ms`, { timeout: 400_000 }, async () => {
    await usePolicy(t.pool, 'c.work', 'chaos-executors', 2);
    const executors: UsherProcess[] = [await startExecutor(t.url), await startExecutor(t.url)];
    for (let i = 0; i < 3; i += 1) await startChaosWorker(t.url, { concurrency: 6, name: `w${i}`, env: { CHAOS_RUN_LOG: log.path } });

    let producing = true;
    let kills = 0;
    // Kills whichever executor has got as far as admitting; its replacement starts meanwhile, so two
    // executor processes exist at all times (one of them may still be starting).
    const killer = (async () => {
      while (producing) {
        await new Promise((resolve) => setTimeout(resolve, 400 + Math.random() * 500));
        const live = executors.map((proc, index) => ({ proc, index })).filter(({ proc }) => events(proc, 'executor:started').length > 0);
        const victim = live[Math.floor(Math.random() * live.length)];
        if (!victim) continue;
        victim.proc.kill('SIGKILL');
        await victim.proc.exited;
        kills += 1;
        executors[victim.index] = spawnUsher(['executor'], { DATABASE_URL: t.url });
      }
    })();
    const ranges: { first: string; last: string }[] = [];
    for (let batch = 0; batch < BATCHES; batch += 1) {
      ranges.push(await enqueueSpread(t.pool, 'c.work', BATCH, { lanes: 40, ms: [10, 60] }));
      await new Promise((resolve) => setTimeout(resolve, 60));
    }
    const range = { first: ranges[0]!.first, last: ranges.at(-1)!.last };
    const counts = await waitAllEnded(t.pool, range, 300_000);
    producing = false;
    await killer;

    expect(counts).toEqual({ completed: BATCHES * BATCH });
    expect((await t.pool.query(`select count(*)::int as n from usher.executions where id between $1 and $2 and attempt <> 1`, [range.first, range.last])).rows)
      .toEqual([{ n: 0 }]);
    await expectSoundQueue(t.pool, range);
    await expectNoDuplicateRuns(t.pool, log, range);
    const { rows: [admissions] } = await t.pool.query(`select count(*)::int as n from public.chaos_admissions`);
    console.info(`executor kills: ${kills} kills; ${admissions.n} admissions, all in lane order; statuses ${JSON.stringify(counts)}`);
    expect(kills).toBeGreaterThanOrEqual(10);
  });
});
