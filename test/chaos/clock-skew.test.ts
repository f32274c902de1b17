/**
 * Scenario 7 (USHER_CHAOS=full): workers and an executor whose wall clocks are 10 minutes off,
 * ahead and behind. Lease arithmetic is done on the database clock, so no lease is expired early or
 * stolen, and a killed worker's executions come back no earlier and no later than the lease allows.
 */
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, usePolicy, workerIdOf } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectSoundQueue, FULL, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const SKEW_MS = 10 * 60 * 1000;
const LEASE_SECONDS = 2;
const skewModule = new URL('./skew-clock.mjs', import.meta.url).href;

function skewed(ms: number): Record<string, string> {
  return {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${skewModule}`.trim(),
    CHAOS_CLOCK_SKEW_MS: String(ms),
    USHER_LEASE_SECONDS: String(LEASE_SECONDS),
  };
}

describe.runIf(FULL)('clock skew', () => {
  const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries, retry_delay_seconds) values ('c.work', 2, 0.1)`);

  it('neither expires nor steals leases when processes\' clocks are 10 minutes ahead or behind', { timeout: 300_000 }, async () => {
    expect(fileURLToPath(skewModule)).toMatch(/skew-clock\.mjs$/);
    await usePolicy(chaos.t.pool, 'c.work', 'chaos-skew', 4);
    const executor = await startExecutor(chaos.t.url, skewed(SKEW_MS));
    const executorStartedAt = Date.now();
    const ahead = await startChaosWorker(chaos.t.url, { concurrency: 4, name: 'ahead', env: skewed(SKEW_MS) });
    const behind = await startChaosWorker(chaos.t.url, { concurrency: 4, name: 'behind', env: skewed(-SKEW_MS) });
    const range = await enqueueSpread(chaos.t.pool, 'c.work', 240, { lanes: 3, ms: [300, 2500] });

    // Leases are set by the database: never more than the lease ahead of its clock, whatever the workers' clocks say.
    const { rows: [lease] } = await waitFor(async () => {
      const result = await chaos.t.pool.query(
        `select count(*)::int as n, max(extract(epoch from lease_expires_at - clock_timestamp()))::float8 as ahead_s
         from usher.executions where status = 'running'`);
      return result.rows[0].n >= 6 ? result : undefined;
    }, { what: 'executions running' });
    expect(lease.ahead_s).toBeLessThanOrEqual(LEASE_SECONDS);

    // Kill the worker whose clock is ahead: its executions come back after about a lease, not at once, not minutes later.
    await waitFor(async () => (await chaos.t.pool.query(`select count(*)::int as n from usher.executions where status = 'running' and worker_id = $1`,
      [workerIdOf(ahead)])).rows[0].n >= 2, { what: 'executions running on the worker ahead' });
    const { rows: [{ at }] } = await chaos.t.pool.query('select clock_timestamp() as at');
    ahead.kill('SIGKILL');
    await ahead.exited;
    expect(await waitAllEnded(chaos.t.pool, range, 240_000)).toEqual({ completed: 240 });

    const { rows: abandoned } = await chaos.t.pool.query<{ worker_id: string; after_s: number }>(
      `select worker_id, extract(epoch from ended_at - $1::timestamptz)::float8 as after_s from usher.execution_attempts`, [at]);
    expect(abandoned.length).toBeGreaterThan(0);
    expect(abandoned.filter((row) => row.worker_id !== workerIdOf(ahead))).toEqual([]);
    for (const row of abandoned) {
      expect(row.after_s).toBeGreaterThan(LEASE_SECONDS / 3);
      expect(row.after_s).toBeLessThanOrEqual(2 * LEASE_SECONDS);
    }
    expect(events(behind, 'execution:lease_lost')).toEqual([]);
    expect(events(behind, 'execution:mark_fenced')).toEqual([]);

    // The skew was real: the handlers' clocks disagree with the database's by 10 minutes.
    const { rows: clocks } = await chaos.t.pool.query<{ worker: string; skew_s: number }>(
      `select w.name as worker, round(avg((e.result->>'now')::float8 / 1000 - extract(epoch from e.completed_at)))::float8 as skew_s
       from usher.executions e join usher.workers w on w.id = e.worker_id where e.id between $1 and $2 group by w.name order by w.name`,
      [range.first, range.last]);
    expect(clocks.find((row) => row.worker === 'behind')!.skew_s).toBeCloseTo(-SKEW_MS / 1000, -1);
    const executorSkew = Date.parse(String(events(executor, 'executor:started')[0]!.ts)) - executorStartedAt;
    expect(Math.abs(executorSkew - SKEW_MS)).toBeLessThan(10_000);
    await expectSoundQueue(chaos.t.pool, range);
    console.info(`clock skew ±10 min: 240 completed; ${abandoned.length} attempts of the killed worker taken back ` +
      `${Math.min(...abandoned.map((r) => r.after_s)).toFixed(2)}-${Math.max(...abandoned.map((r) => r.after_s)).toFixed(2)} s after the kill (lease ${LEASE_SECONDS} s); ` +
      `handler clock vs database: ${JSON.stringify(clocks)}; executor log clock ahead by ${Math.round(executorSkew / 1000)} s`);
  });
});
