/**
 * Scenario 1: workers SIGKILLed at random, every few seconds, while executions of three threshold-5
 * lanes run; the test restarts a worker for each one it kills. Small in CI, 5,000 executions with
 * USHER_CHAOS=full.
 */
import { expect, it } from 'vitest';
import { startExecutor, type UsherProcess } from '../support/processes.ts';
import { usePolicy, workerIdOf } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, scale, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const COUNT = scale(700, 5000);
// A kill at least this often, and never fewer kills than KILLS in all: on a fast run the progress
// thresholds (every COUNT / (KILLS + 1) completions) come first.
const KILL_EVERY_MS = 3000;
const KILLS = scale(4, 10);
const LEASE_SECONDS = 2;
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_PASS_ALLOWANCE_MS = 500;
const MAX_RETRIES = 6;

const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries, retry_delay_seconds, retry_backoff_factor) values ('c.work', ${MAX_RETRIES}, 0.1, 1)`);

it(`runs ${COUNT} executions in 3 threshold-5 lanes to the end while a random worker of 4 is SIGKILLed every ${KILL_EVERY_MS} ms`, { timeout: scale(120_000, 600_000) }, async () => {
  await usePolicy(chaos.t.pool, 'c.work', 'chaos-kills', 5);
  const env = { USHER_LEASE_SECONDS: String(LEASE_SECONDS), USHER_SWEEP_INTERVAL_MS: String(SWEEP_INTERVAL_MS), CHAOS_RUN_LOG: chaos.log.path };
  await startExecutor(chaos.t.url, env);
  let serial = 0;
  const spawn = () => startChaosWorker(chaos.t.url, { concurrency: 4, name: `w${serial++}`, env });
  const workers: UsherProcess[] = await Promise.all([spawn(), spawn(), spawn(), spawn()]);
  const range = await enqueueSpread(chaos.t.pool, 'c.work', COUNT, { lanes: 3, ms: [30, 150] });

  const kills: { workerId: string; at: Date }[] = [];
  const starting: Promise<void>[] = [];
  let done = false;
  const ended = waitAllEnded(chaos.t.pool, range, scale(100_000, 560_000)).finally(() => { done = true; });
  const completed = async () => (await chaos.t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [range.first, range.last])).rows[0]!.n;
  while (!done) {
    const due = Date.now() + KILL_EVERY_MS;
    const threshold = (COUNT * (kills.length + 1)) / (KILLS + 1);
    await waitFor(async () => done || Date.now() >= due || (await completed()) >= threshold, { what: 'the next kill', timeoutMs: KILL_EVERY_MS + 5000, intervalMs: 50 });
    if (done) break;
    // Replacements start in the background (a start takes seconds on a loaded machine), so the
    // victim is one of the workers running now.
    const live = workers.map((proc, index) => ({ proc, index })).filter(({ proc }) => proc.child.exitCode === null && proc.child.signalCode === null);
    const victim = live[Math.floor(Math.random() * live.length)];
    if (!victim) {
      await Promise.race(starting);
      continue;
    }
    const at = (await chaos.t.pool.query<{ now: Date }>('select clock_timestamp() as now')).rows[0]!.now;
    victim.proc.kill('SIGKILL');
    await victim.proc.exited;
    kills.push({ workerId: workerIdOf(victim.proc), at });
    starting.push(spawn().then((proc) => { workers[victim.index] = proc; }));
  }
  const counts = await ended;
  await Promise.all(starting);

  // Every execution ended; one that is not completed used up all its attempts on killed workers.
  const killedIds = kills.map((kill) => kill.workerId);
  expect(counts.completed! + (counts.abandoned ?? 0)).toBe(COUNT);
  const { rows: notCompleted } = await chaos.t.pool.query(
    `select id, status, attempt from usher.executions where id between $1 and $2 and status <> 'completed'`, [range.first, range.last]);
  expect(notCompleted.filter((row) => row.status !== 'abandoned' || row.attempt !== MAX_RETRIES + 1)).toEqual([]);
  // Every earlier attempt was abandoned, and only by a killed worker.
  const { rows: attempts } = await chaos.t.pool.query(
    `select a.status, a.worker_id from usher.execution_attempts a where a.execution_id between $1 and $2`, [range.first, range.last]);
  expect(attempts.filter((row) => row.status !== 'abandoned' || !killedIds.includes(row.worker_id))).toEqual([]);
  // A completed execution's result is its last attempt's.
  const { rows: mismatched } = await chaos.t.pool.query(
    `select id from usher.executions where id between $1 and $2 and status = 'completed'
       and ((result->>'attempt')::int <> attempt or (result->>'n')::int <> (params->>'n')::int)`, [range.first, range.last]);
  expect(mismatched).toEqual([]);
  await expectSoundQueue(chaos.t.pool, range);
  await expectNoDuplicateRuns(chaos.t.pool, chaos.log, range);

  // Recovery: from each kill to the last of the victim's executions taken back (database clock).
  const { rows: recovered } = await chaos.t.pool.query<{ worker_id: string; ended: Date }>(
    `select worker_id, max(ended_at) as ended from (
       select worker_id, ended_at from usher.execution_attempts where status = 'abandoned'
       union all select worker_id, completed_at from usher.executions where status = 'abandoned') x
     group by worker_id`);
  const recoveryMs = recovered.map((row) => {
    const kill = kills.find((k) => k.workerId === row.worker_id)!;
    return row.ended.getTime() - kill.at.getTime();
  });
  const max = Math.max(0, ...recoveryMs);
  console.info(`worker kills: ${kills.length} kills, ${attempts.length} attempts abandoned and retried, ` +
    `statuses ${JSON.stringify(counts)}, recovery after kill max ${max} ms, median ${recoveryMs.sort((a, b) => a - b)[Math.floor(recoveryMs.length / 2)] ?? 0} ms (lease ${LEASE_SECONDS} s)`);
  expect(kills.length).toBeGreaterThanOrEqual(KILLS);
  expect(attempts.length).toBeGreaterThan(0);
  // RELIABILITY T01: a killed worker's executions are back within a lease (renewed at most just
  // before the kill) plus one sweep interval, plus the sweep's own pass on a loaded 2-core machine
  // (2.74 s was seen here with the rest of the suite running beside it).
  expect(max).toBeLessThanOrEqual(LEASE_SECONDS * 1000 + SWEEP_INTERVAL_MS + SWEEP_PASS_ALLOWANCE_MS);
});
