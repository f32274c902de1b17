/**
 * RELIABILITY T22: the sweep that takes back an expired lease racing the lease's own worker. The
 * interleavings are forced with the lane's row lock as a barrier: a third connection holds it, so
 * the sweep has read the expired execution and waits on the lane, in the middle of its work, while
 * the worker's completion waits ahead of it or behind it, or a whole new attempt happens first.
 */
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { connectionWithPid, waitingOnLock as waitingOnLockOf } from '../support/locks.ts';

const LANE = 'action:r.race';
let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, { name: 'race', host: 'test', pid: 1, concurrency: 10, actions: [{ ref: 'r.race' }] });
  await t.pool.query(`update usher.actions set max_retries = 3 where ref = 'r.race'`);
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('race-one', 'r.race', 1)`);
});
afterAll(() => t.drop());
beforeEach(async () => {
  await t.pool.query(`delete from usher.executions; delete from usher.lanes`);
});

/** Two executions of the threshold-1 lane; the first claimed, its lease already expired. */
async function expiredHead(): Promise<{ head: { id: string; lease_token: string }; next: string }> {
  const { rows } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref, params) values ('r.race', '{"n": 1}'), ('r.race', '{"n": 2}') returning id`);
  await admitQueued(t.pool);
  const [head] = await calls.claimScheduled(t.pool, workerId, ['r.race'], 1, 30);
  expect(head!.id).toBe(rows[0]!.id);
  await t.pool.query(`update usher.executions set lease_expires_at = clock_timestamp() - interval '1 second' where id = $1`, [head!.id]);
  return { head: head!, next: rows[1]!.id };
}

const connection = () => connectionWithPid(t);
const waitingOnLock = (pid: number, what: string) => waitingOnLockOf(t.pool, pid, what);

/**
 * The barrier holds the lane; `first` and then `second` start and each waits on it, in that order
 * (a completion and a sweep both lock the lane before the execution's row); then the barrier lets go.
 */
async function raceOnTheLane(head: { id: string; lease_token: string }, order: ['worker' | 'sweep', 'worker' | 'sweep']) {
  const barrier = await connection();
  await barrier.client.query('begin');
  await barrier.client.query('select usher.lock_lane($1)', [LANE]);
  const started: Record<string, Promise<pg.QueryResult>> = {};
  for (const who of order) {
    const { client, pid } = await connection();
    started[who] = who === 'sweep'
      ? client.query('select usher.expire_running_executions(30) as n')
      : client.query(`select usher.complete_execution($1, $2, '{"by": "worker"}') as status`, [head.id, head.lease_token]);
    // The sweep has read the expired lease by the time it waits: it reads before it locks.
    await waitingOnLock(pid, `the ${who} to wait on the lane`);
  }
  await barrier.client.query('commit');
  return { swept: (await started.sweep!).rows[0].n as number, completion: (await started.worker!).rows[0].status as string | null };
}

it('never reverts a completion that commits after the sweep read the expired lease and before it writes', async () => {
  const { head, next } = await expiredHead();
  // The sweep reads the execution as expired while the completion waits ahead of it on the lane.
  expect(await raceOnTheLane(head, ['worker', 'sweep'])).toEqual({ swept: 0, completion: 'completed' });
  const { rows } = await t.pool.query(`select id, status, attempt, result from usher.executions order by id`);
  expect(rows).toEqual([
    { id: head.id, status: 'completed', attempt: 1, result: { by: 'worker' } },
    { id: next, status: 'scheduled', attempt: 0, result: null },
  ]);
  expect((await t.pool.query('select count(*)::int as n from usher.execution_attempts')).rows).toEqual([{ n: 0 }]);
  expect(await checkInvariants(t.pool)).toEqual([]);
});

it('fences the completion when the sweep gets the lane first: the attempt is abandoned once and retried', async () => {
  const { head, next } = await expiredHead();
  expect(await raceOnTheLane(head, ['sweep', 'worker'])).toEqual({ swept: 1, completion: null });
  const { rows } = await t.pool.query(`select id, status, attempt, result from usher.executions order by id`);
  // Retried at its place, the head of its lane (a backoff first), so the next one still waits.
  expect(rows).toEqual([
    { id: head.id, status: 'requested', attempt: 1, result: null },
    { id: next, status: 'requested', attempt: 0, result: null },
  ]);
  expect((await t.pool.query('select execution_id as id, attempt, status from usher.execution_attempts')).rows)
    .toEqual([{ id: head.id, attempt: 1, status: 'abandoned' }]);
  expect(await checkInvariants(t.pool)).toEqual([]);
});

it('never overwrites a new attempt claimed while the sweep that read the old lease waits to write', async () => {
  const { head } = await expiredHead();
  const barrier = await connection();
  await barrier.client.query('begin');
  await barrier.client.query('select usher.lock_lane($1)', [LANE]);

  const sweeper = await connection();
  const swept = sweeper.client.query<{ n: number }>('select usher.expire_running_executions(30) as n');
  await waitingOnLock(sweeper.pid, 'the sweep, having read the expired lease, to wait on the lane');
  // Meanwhile, under the lane lock, another sweep takes the attempt back, the retry is admitted
  // again, and a worker claims it as attempt 2: all before the waiting sweep may write.
  expect((await barrier.client.query('select usher.expire_running_executions(30) as n')).rows).toEqual([{ n: 1 }]);
  await barrier.client.query(`update usher.executions set run_at = clock_timestamp() where id = $1`, [head.id]); // its backoff is over
  await barrier.client.query('select usher.admit_lane($1)', [LANE]);
  const { rows: [second] } = await barrier.client.query<{ id: string; attempt: number; lease_token: string }>(
    `select id, attempt, lease_token from usher.claim_scheduled($1, array['r.race'], 1, 30)`, [workerId]);
  expect(second).toMatchObject({ id: head.id, attempt: 2 });
  await barrier.client.query('commit');

  // The waiting sweep finds another lease on the row than the one it read, and leaves it.
  expect((await swept).rows).toEqual([{ n: 0 }]);
  const { rows } = await t.pool.query(`select status, attempt, lease_token from usher.executions where id = $1`, [head.id]);
  expect(rows).toEqual([{ status: 'running', attempt: 2, lease_token: second!.lease_token }]);
  expect((await t.pool.query(`select attempt, status from usher.execution_attempts where execution_id = $1`, [head.id])).rows)
    .toEqual([{ attempt: 1, status: 'abandoned' }]);
  // The first attempt's worker is fenced; the second's completes.
  expect(await calls.completeExecution(t.pool, { ...head, action_ref: 'r.race', params: {}, attempt: 1, timeout_seconds: null } as never, 'null')).toBeNull();
  expect(await calls.completeExecution(t.pool, { id: head.id, lease_token: second!.lease_token } as never, '{"attempt": 2}')).toBe('completed');
  expect(await checkInvariants(t.pool)).toEqual([]);
});
