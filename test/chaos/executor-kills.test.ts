/**
 * Scenario 2 (USHER_CHAOS=full): two executors run the whole test and one of them is SIGKILLed
 * every moment, mid-admission, and restarted, while a producer keeps adding work to 40 lanes so that
 * admission is the executors' job, not only the completions'.
 */
import { describe, expect, it } from 'vitest';
import { spawnUsher, startExecutor, type UsherProcess } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, FULL, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const BATCHES = 150;
const BATCH = 20;

describe.runIf(FULL)('executors SIGKILLed mid-admission', () => {
  const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work')`);

  it(`admits ${BATCHES * BATCH} executions of 40 lanes in order, exactly once, while one of two executors is killed every 400-900 ms`, { timeout: 400_000 }, async () => {
    await usePolicy(chaos.t.pool, 'c.work', 'chaos-executors', 2);
    const executors: UsherProcess[] = [await startExecutor(chaos.t.url), await startExecutor(chaos.t.url)];
    for (let i = 0; i < 3; i += 1) await startChaosWorker(chaos.t.url, { concurrency: 6, name: `w${i}`, env: { CHAOS_RUN_LOG: chaos.log.path } });

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
        executors[victim.index] = spawnUsher(['executor'], { DATABASE_URL: chaos.t.url });
      }
    })();
    const ranges: { first: string; last: string }[] = [];
    for (let batch = 0; batch < BATCHES; batch += 1) {
      ranges.push(await enqueueSpread(chaos.t.pool, 'c.work', BATCH, { lanes: 40, ms: [10, 60] }));
      await new Promise((resolve) => setTimeout(resolve, 60));
    }
    const range = { first: ranges[0]!.first, last: ranges.at(-1)!.last };
    const counts = await waitAllEnded(chaos.t.pool, range, 300_000);
    producing = false;
    await killer;

    expect(counts).toEqual({ completed: BATCHES * BATCH });
    expect((await chaos.t.pool.query(`select count(*)::int as n from usher.executions where id between $1 and $2 and attempt <> 1`, [range.first, range.last])).rows)
      .toEqual([{ n: 0 }]);
    await expectSoundQueue(chaos.t.pool, range);
    await expectNoDuplicateRuns(chaos.t.pool, chaos.log, range);
    const { rows: [admissions] } = await chaos.t.pool.query(`select count(*)::int as n from public.chaos_admissions`);
    console.info(`executor kills: ${kills} kills; ${admissions.n} admissions, all in lane order; statuses ${JSON.stringify(counts)}`);
    expect(kills).toBeGreaterThanOrEqual(10);
  });
});
