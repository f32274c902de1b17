/**
 * Scenario 17 (RELIABILITY T15): the head of a strict lane whose handler ends its worker process
 * (process.exit(1)) on every attempt. The test restarts a worker whenever one dies, as a process
 * supervisor would. Each attempt must be charged when it is claimed, so the head is given up after
 * its retries instead of crash-looping the workers for ever; then its lane goes on in order, and
 * the other lane never stops.
 */
import { expect, it } from 'vitest';
import { killAll, startExecutor, type UsherProcess } from '../support/processes.ts';
import { usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { expectNoDuplicateRuns, expectSoundQueue, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const MAX_RETRIES = 2;
const LEASE_SECONDS = 2;

const chaos = useChaosDatabase(
  `insert into usher.actions (ref, max_retries, retry_delay_seconds, retry_backoff_factor) values ('c.work', ${MAX_RETRIES}, 0.1, 1)`);

/** Two workers at all times, started by the test as a supervisor would: one that dies is replaced. */
async function supervisedWorkers(env: Record<string, string>) {
  let serial = 0;
  let stopping = false;
  const exits: number[] = [];
  const workers: UsherProcess[] = [];
  const spawn = async (): Promise<void> => {
    const proc = await startChaosWorker(chaos.t.url, { concurrency: 2, name: `w${serial++}`, env });
    workers.push(proc);
    void proc.exited.then(async ({ code }) => {
      if (stopping) return;
      exits.push(code ?? -1);
      await spawn();
    });
  };
  await Promise.all([spawn(), spawn()]);
  return {
    exits,
    running: () => workers.filter((proc) => proc.child.exitCode === null && proc.child.signalCode === null).length,
    stop: async () => {
      stopping = true;
      await killAll();
    },
  };
}

/** The poison head and three after it in lane `<prefix>-poisoned`, and 30 of 200 ms in lane `<prefix>-healthy`. */
async function enqueuePoisonedAndHealthy(prefix: string) {
  const { rows } = await chaos.t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params)
     select 'c.work', p || jsonb_build_object('lane', $1::text) from (values
       ('{"n": 0, "exit": true}'::jsonb), ('{"n": 1, "ms": 5}'), ('{"n": 2, "ms": 5}'), ('{"n": 3, "ms": 5}')) v(p)
     returning id`, [`${prefix}-poisoned`]);
  // Retries to spare: one running beside the poison dies with it, and may meet it again on its retry.
  const { rows: [healthy] } = await chaos.t.pool.query<{ first: string; last: string }>(
    `with inserted as (insert into usher.executions (action_ref, params, max_retries)
       select 'c.work', jsonb_build_object('lane', $1::text, 'n', g, 'ms', 200), 10 from generate_series(1, 30) g order by g returning id)
     select min(id) as first, max(id) as last from inserted`, [`${prefix}-healthy`]);
  return { head: rows[0]!.id, rest: rows.slice(1).map((row) => row.id), healthy: healthy!, range: { first: rows[0]!.id, last: healthy!.last } };
}

/** The head's attempts, each started once and each ending a worker; the healthy lane all completed. */
async function expectPoisonRanItsCourse(head: string, exits: number[], range: { first: string; last: string }, healthy: { first: string; last: string }) {
  const { rows: [ended] } = await chaos.t.pool.query(`select status, attempt from usher.executions where id = $1`, [head]);
  expect(ended).toEqual({ status: 'abandoned', attempt: MAX_RETRIES + 1 });
  const starts = await expectNoDuplicateRuns(chaos.t.pool, chaos.log, range);
  expect(starts.get(head)).toEqual([1, 2, 3]);
  expect(exits).toEqual([1, 1, 1]);
  const { rows: [done] } = await chaos.t.pool.query(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [healthy.first, healthy.last]);
  expect(done).toEqual({ n: 30 });
}

/** Executions by id, in the order they started, with whether each started after `after` ended. */
async function startOrder(ids: string[], after: string) {
  const { rows } = await chaos.t.pool.query(
    `select e.id, e.status, e.attempt, e.started_at >= h.completed_at as after_head
     from usher.executions e, (select completed_at from usher.executions where id = $1) h
     where e.id = any($2::bigint[]) order by e.started_at`, [after, ids]);
  return rows;
}

it(`gives up a head that kills its worker on each of its ${MAX_RETRIES + 1} attempts, then runs the rest of its lane in order`, { timeout: 120_000 }, async () => {
  await usePolicy(chaos.t.pool, 'c.work', 'chaos-poison', 1);
  const env = { USHER_LEASE_SECONDS: String(LEASE_SECONDS), CHAOS_RUN_LOG: chaos.log.path };
  await startExecutor(chaos.t.url, env);
  const workers = await supervisedWorkers(env);
  const { head, rest, healthy, range } = await enqueuePoisonedAndHealthy('wait');

  expect(await waitAllEnded(chaos.t.pool, range, 90_000)).toEqual({ abandoned: 1, completed: 33 });
  await waitFor(() => workers.running() === 2, { what: 'two workers running' });
  await workers.stop();
  await expectPoisonRanItsCourse(head, workers.exits, range, healthy);
  // The rest of its lane started only after the head was given up, one at a time, in order.
  expect(await startOrder(rest, head)).toEqual(rest.map((id) => ({ id, status: 'completed', attempt: 1, after_head: true })));
  await expectSoundQueue(chaos.t.pool, range);
});

it('under on_failure = block, the given-up head blocks its lane until an operator unblocks it; the other lane runs on', { timeout: 120_000 }, async () => {
  await chaos.t.pool.query(`update usher.policies set enabled = false where action_ref = 'c.work'`);
  await chaos.t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters, on_failure) values ('chaos-poison-block', 'c.work', 1, '{lane}', 'block')`);
  const env = { USHER_LEASE_SECONDS: String(LEASE_SECONDS), CHAOS_RUN_LOG: chaos.log.path };
  await startExecutor(chaos.t.url, env);
  const workers = await supervisedWorkers(env);
  const { head, rest, healthy, range } = await enqueuePoisonedAndHealthy('block');

  await waitAllEnded(chaos.t.pool, healthy, 90_000);
  await waitFor(async () => (await chaos.t.pool.query(`select 1 from usher.executions where id = $1 and status = 'abandoned'`, [head])).rowCount === 1,
    { what: 'the head given up', timeoutMs: 60_000 });
  await expectPoisonRanItsCourse(head, workers.exits, range, healthy);
  const laneKey = 'action:c.work#["block-poisoned"]';
  const { rows: [blocked] } = await chaos.t.pool.query(`select blocked_by, blocked_reason from usher.lane_stats where lane_key = $1`, [laneKey]);
  expect(blocked).toEqual({ blocked_by: head, blocked_reason: expect.stringMatching(new RegExp(`^execution ${head} ended abandoned after 3 attempts: lease expired`)) });
  const { rows: waiting } = await chaos.t.pool.query(`select id, status from usher.executions where id = any($1::bigint[]) order by id`, [rest]);
  expect(waiting).toEqual(rest.map((id) => ({ id, status: 'requested' })));

  expect((await chaos.t.pool.query(`select usher.unblock_lane($1) as was`, [laneKey])).rows).toEqual([{ was: head }]);
  expect(await waitAllEnded(chaos.t.pool, range, 30_000)).toEqual({ abandoned: 1, completed: 33 });
  expect(await startOrder(rest, head)).toEqual(rest.map((id) => ({ id, status: 'completed', attempt: 1, after_head: true })));
  expect(workers.exits).toEqual([1, 1, 1]);
  await workers.stop();
  await expectSoundQueue(chaos.t.pool, range);
});
