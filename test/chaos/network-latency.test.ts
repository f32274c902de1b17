/**
 * Scenario 6 (USHER_CHAOS=full): a worker behind a proxy that delays every packet 50 ms each way,
 * with a 1 s lease. Leases are renewed in time, nothing runs twice, nothing is fenced.
 */
import { describe, expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { proxiedUrl, useFaultProxy } from './fault-proxy.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, FULL, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

describe.runIf(FULL)('latency between worker and database', () => {
  const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work')`);
  const faults = useFaultProxy(() => chaos.t.url);

  it('runs 400 executions once each through 100 ms round trips with a 1 s lease: no lease lost, no mark refused', { timeout: 300_000 }, async () => {
    await usePolicy(chaos.t.pool, 'c.work', 'chaos-latency', 4);
    faults.proxy.delayMs = 50;
    const slow = proxiedUrl(chaos.t.url, await faults.proxy.listen());
    const env = { USHER_LEASE_SECONDS: '1', CHAOS_RUN_LOG: chaos.log.path };
    await startExecutor(chaos.t.url, env);
    const workers = [
      await startChaosWorker(slow, { concurrency: 6, name: 'far-1', env }),
      await startChaosWorker(slow, { concurrency: 6, name: 'far-2', env }),
    ];
    const { rows: [rtt] } = await chaos.t.pool.query('select 1 as one');
    expect(rtt).toEqual({ one: 1 });
    const range = await enqueueSpread(chaos.t.pool, 'c.work', 400, { lanes: 3, ms: [200, 1500] });
    const counts = await waitAllEnded(chaos.t.pool, range, 240_000);
    if (counts.completed !== 400) {
      const noteworthy = workers.flatMap((worker) => worker.lines.filter((line) => /lease_lost|heartbeat:failed|mark_fenced|mark_retrying|claim:failed/.test(line)));
      console.info(noteworthy.slice(0, 30).join('\n'));
      console.info(JSON.stringify((await chaos.t.pool.query(`select id, status, attempt, error, started_at, completed_at, updated_at from usher.executions where status <> 'completed'`)).rows));
    }
    expect(counts).toEqual({ completed: 400 });
    expect((await chaos.t.pool.query(`select count(*)::int as n from usher.execution_attempts`)).rows).toEqual([{ n: 0 }]);
    expect((await chaos.t.pool.query(`select count(*)::int as n from usher.executions where id between $1 and $2 and attempt <> 1`, [range.first, range.last])).rows)
      .toEqual([{ n: 0 }]);
    for (const worker of workers) {
      for (const event of ['execution:lease_lost', 'execution:mark_fenced', 'heartbeat:failed', 'worker:mark_impossible']) expect(events(worker, event)).toEqual([]);
    }
    await expectSoundQueue(chaos.t.pool, range);
    await expectNoDuplicateRuns(chaos.t.pool, chaos.log, range);
    const { rows: [timing] } = await chaos.t.pool.query(
      `select round(avg(extract(epoch from completed_at - started_at) * 1000 - (params->>'ms')::int))::int as overhead_ms,
              max(extract(epoch from completed_at - started_at))::float8 as longest_s
       from usher.executions where id between $1 and $2`, [range.first, range.last]);
    console.info(`latency 50 ms each way, lease 1 s: 400 completed, 0 retries; mean claim-to-completion overhead ${timing.overhead_ms} ms; longest run ${timing.longest_s.toFixed(2)} s`);
    expect(timing.longest_s).toBeGreaterThan(1);
  });
});
