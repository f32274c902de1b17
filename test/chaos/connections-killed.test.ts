/**
 * Scenario 3: every Usher connection to the database killed (pg_terminate_backend, as a Postgres
 * restart or failover does to clients) several times mid-run. The processes reconnect by
 * themselves, LISTEN included, nothing is lost and nothing ends twice.
 */
import { expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, scale, startChaosWorker, terminateUsherBackends, useChaosDatabase, waitAllEnded } from './support.ts';

const COUNT = scale(600, 3000);
const ROUNDS = scale(3, 8);
// Long polls: if a LISTEN connection did not come back, the last batch would wait this long.
const POLL_MS = 10_000;

const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries, retry_delay_seconds) values ('c.work', 3, 0.1)`);

async function listeners(): Promise<string[]> {
  const { rows } = await chaos.t.pool.query<{ name: string }>(
    `select application_name as name from pg_stat_activity
     where datname = current_database() and application_name like 'usher-%-listen:%' order by 1`);
  return rows.map((row) => row.name);
}

it(`completes ${COUNT} executions exactly once while every Usher connection is killed ${ROUNDS} times, and LISTEN comes back`, { timeout: scale(120_000, 400_000) }, async () => {
  await usePolicy(chaos.t.pool, 'c.work', 'chaos-terminate', 5);
  const env = { USHER_LEASE_SECONDS: '3', USHER_POLL_INTERVAL_MS: String(POLL_MS), CHAOS_RUN_LOG: chaos.log.path };
  const [executor, ...workers] = await Promise.all([
    startExecutor(chaos.t.url, { ...env, USHER_LOG_LEVEL: 'debug' }),
    startChaosWorker(chaos.t.url, { concurrency: 4, name: 'a', env: { ...env, USHER_LOG_LEVEL: 'debug' } }),
    startChaosWorker(chaos.t.url, { concurrency: 4, name: 'b', env: { ...env, USHER_LOG_LEVEL: 'debug' } }),
  ]);
  const expectedListeners = ['usher-worker-listen:a', 'usher-worker-listen:b', expect.stringMatching(/^usher-executor-listen:/)].sort();
  await waitFor(async () => (await listeners()).length === 3, { what: 'three LISTEN connections' });

  const range = await enqueueSpread(chaos.t.pool, 'c.work', COUNT, { lanes: 3, ms: [5, 40] });
  const completed = async () => (await chaos.t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [range.first, range.last])).rows[0]!.n;
  let terminated = 0;
  for (let round = 1; round <= ROUNDS; round += 1) {
    await waitFor(async () => (await completed()) >= (COUNT * round) / (ROUNDS + 1), { what: `${round}/${ROUNDS + 1} completed`, timeoutMs: 60_000 });
    terminated += await terminateUsherBackends(chaos.t.pool);
  }
  const counts = await waitAllEnded(chaos.t.pool, range, 90_000);
  expect(counts).toEqual({ completed: COUNT });
  expect(terminated).toBeGreaterThanOrEqual(ROUNDS * 3);

  // Every process is still the one started, and each LISTEN connection was re-established.
  for (const proc of [executor, ...workers]) expect(proc.child.exitCode).toBeNull();
  await waitFor(async () => (await listeners()).length === 3, { what: 'LISTEN connections back' });
  expect(await listeners()).toEqual(expect.arrayContaining(expectedListeners));
  for (const proc of [executor, ...workers]) expect(events(proc, 'listener:reconnecting').length).toBeGreaterThanOrEqual(ROUNDS);

  // The new batch is admitted and claimed on NOTIFY, far sooner than the 10 s polls would.
  const last = await enqueueSpread(chaos.t.pool, 'c.work', 20, { lanes: 2, prefix: 'after', ms: 5 });
  expect(await waitAllEnded(chaos.t.pool, last, POLL_MS / 2)).toEqual({ completed: 20 });
  const { rows: [latency] } = await chaos.t.pool.query<{ ms: number }>(
    `select max(extract(epoch from started_at - created_at) * 1000)::float8 as ms from usher.executions where id between $1 and $2`,
    [last.first, last.last]);

  // Retried only if a claim's answer was lost with its connection (then abandoned and retried once).
  const { rows: attempts } = await chaos.t.pool.query(
    `select status, count(*)::int as n from usher.execution_attempts where execution_id between $1 and $2 group by status`, [range.first, range.last]);
  expect(attempts.filter((row) => row.status !== 'abandoned')).toEqual([]);
  const all = { first: range.first, last: last.last };
  await expectSoundQueue(chaos.t.pool, all);
  await expectNoDuplicateRuns(chaos.t.pool, chaos.log, all);
  const fenced = workers.flatMap((worker) => events(worker, 'execution:mark_fenced'));
  console.info(`connections killed: ${terminated} backends over ${ROUNDS} rounds; retried after lost claims: ${JSON.stringify(attempts)}; ` +
    `fenced marks (committed before the kill, retried after): ${fenced.length}; latency of the batch after: ${Math.round(latency!.ms)} ms`);
  expect(latency!.ms).toBeLessThan(POLL_MS / 4);
});
