/**
 * Calls that lock several rows at once, forced into the interleavings where two of them wait for
 * each other (found by the concurrency hunt, RELIABILITY T23). A barrier connection holds one row
 * or lane while the calls line up behind it; every connection finds a deadlock in 100 ms, so a
 * cycle fails the test at once instead of stalling a worker for the server's deadlock_timeout.
 */
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { connectionWithPid, waitingOnLock as waitingOnLockOf } from '../support/locks.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'locks', host: 'test', pid: 1, concurrency: 10, actions: [{ ref: 'k.free' }, { ref: 'k.lane' }, { ref: 'k.one' }],
  });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('locks-lane', 'k.lane', 2), ('locks-one', 'k.one', 1)`);
});
afterAll(() => t.drop());
beforeEach(async () => {
  await t.pool.query(`delete from usher.executions; delete from usher.lanes; update usher.actions set paused_at = null`);
});

// A call that would wait on a lock it should never wait on fails in seconds, not at the test's timeout.
const connection = () => connectionWithPid(t, `set deadlock_timeout = '100ms'; set lock_timeout = '5s'`);
const waitingOnLock = (pid: number, what: string) => waitingOnLockOf(t.pool, pid, what);
const waitingOrDone = (pid: number, what: string) => waitingOnLockOf(t.pool, pid, what, { orDone: true });

/** Settles every call, so a failed one is reported with its error rather than as a rejection. */
async function outcomes(calls: Record<string, Promise<unknown>>): Promise<Record<string, unknown>> {
  const entries = await Promise.all(Object.entries(calls).map(async ([name, call]) => {
    try {
      return [name, await call] as const;
    } catch (error) {
      return [name, `${(error as { code?: string }).code}: ${(error as Error).message}`] as const;
    }
  }));
  return Object.fromEntries(entries);
}

it('a heartbeat and a batch of completions of the same leases, in opposite orders, do not deadlock', async () => {
  const { rows } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('k.free'), ('k.free') returning id`);
  const claims = await calls.claimScheduled(t.pool, workerId, ['k.free'], 2, 30);
  expect(claims.map((claim) => claim.id)).toEqual(rows.map((row) => row.id));
  const [a, b] = claims as [typeof claims[0], typeof claims[0]];
  const { rows: before } = await t.pool.query<{ id: string; lease_expires_at: Date }>(
    'select id, lease_expires_at from usher.executions order by id');

  // The barrier holds b. The heartbeat asks for b, then a; the batch completes a, then b.
  const barrier = await connection();
  await barrier.client.query('begin');
  await barrier.client.query('select 1 from usher.executions where id = $1 for update', [b.id]);
  const heartbeat = await connection();
  const heartbeatCall = calls.heartbeatWorker(heartbeat.client, workerId, [b, a], 30);
  await waitingOrDone(heartbeat.pid, 'the heartbeat to wait on b or answer');
  const batch = await connection();
  const batchCall = calls.completeAndClaim(batch.client, [{ claim: a, resultJson: '{}' }, { claim: b, resultJson: '{}' }],
    { workerId, actionRefs: ['k.free'], limit: 0, leaseSeconds: 30 });
  await waitingOrDone(batch.pid, 'the batch to wait on b');
  await barrier.client.query('commit');

  const settled = await outcomes({ heartbeat: heartbeatCall, batch: batchCall });
  expect(settled.batch).toEqual({ statuses: ['completed', 'completed'], claims: [] });
  // b was locked when the heartbeat came: still held, not renewed; a renewed.
  expect(settled.heartbeat).toEqual([
    { execution_id: a.id, lease_token: a.lease_token, status: 'running', renewed: true },
    { execution_id: b.id, lease_token: b.lease_token, status: 'running', renewed: false },
  ]);
  expect(before.map((row) => row.id)).toEqual([a.id, b.id]);
  const { rows: after } = await t.pool.query('select id, status from usher.executions order by id');
  expect(after).toEqual([{ id: a.id, status: 'completed' }, { id: b.id, status: 'completed' }]);
});

it('a heartbeat leaves a lease whose row is locked unrenewed, and renews it once the row is free', async () => {
  await t.pool.query(`insert into usher.executions (action_ref) values ('k.free')`);
  const [claim] = await calls.claimScheduled(t.pool, workerId, ['k.free'], 1, 30);
  const expiry = async () => (await t.pool.query<{ at: Date }>('select lease_expires_at as at from usher.executions where id = $1', [claim!.id])).rows[0]!.at.getTime();
  const first = await expiry();
  const barrier = await connection();
  await barrier.client.query('begin');
  await barrier.client.query('select 1 from usher.executions where id = $1 for update', [claim!.id]);
  const heartbeat = await connection();
  expect(await calls.heartbeatWorker(heartbeat.client, workerId, [claim!], 60)).toEqual([
    { execution_id: claim!.id, lease_token: claim!.lease_token, status: 'running', renewed: false },
  ]);
  expect(await expiry()).toBe(first);
  await barrier.client.query('commit');
  expect(await calls.heartbeatWorker(t.pool, workerId, [claim!], 60)).toEqual([
    { execution_id: claim!.id, lease_token: claim!.lease_token, status: 'running', renewed: true },
  ]);
  expect(await expiry()).toBeGreaterThan(first + 20_000);
});

const queuedAt = async (id: string) => (await t.pool.query<{ at: Date }>('select queued_at as at from usher.executions where id = $1', [id])).rows[0]!.at;

it('resuming an action that is not paused touches none of its waiting executions', async () => {
  const { rows } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('k.lane'), ('k.lane'), ('k.lane') returning id`);
  const waiting = rows[2]!.id;
  await admitQueued(t.pool);
  const before = await queuedAt(waiting);
  // Another transaction holds the waiting row: a resume that rewrote it would wait here.
  const barrier = await connection();
  await barrier.client.query('begin');
  await barrier.client.query('select 1 from usher.executions where id = $1 for update', [waiting]);
  const resumer = await connection();
  expect((await resumer.client.query(`select usher.resume_action('k.lane') as resumed`)).rows).toEqual([{ resumed: true }]);
  await barrier.client.query('commit');
  expect(await queuedAt(waiting)).toEqual(before);
});

it('resuming a paused action restarts its waiting time under the lane lock, after an admission that holds the lane', async () => {
  const { rows } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('k.lane'), ('k.lane'), ('k.lane') returning id`);
  await admitQueued(t.pool);
  await t.pool.query(`select usher.pause_action('k.lane')`);
  const waiting = rows[2]!.id;
  const before = await queuedAt(waiting);
  const barrier = await connection();
  await barrier.client.query('begin');
  await barrier.client.query(`select usher.lock_lane('action:k.lane')`);
  const resumer = await connection();
  const resumed = resumer.client.query(`select usher.resume_action('k.lane') as resumed`);
  await waitingOnLock(resumer.pid, 'the resume to wait on the lane');
  await barrier.client.query('commit');
  expect((await resumed).rows).toEqual([{ resumed: true }]);
  expect((await queuedAt(waiting)).getTime()).toBeGreaterThan(before.getTime());
  expect(await checkInvariants(t.pool)).toEqual([]);
});

/**
 * One race of a cancel with the admission of its execution. The cancel waits on the admitting
 * transaction; a lane holder lines up on the lane and will write the row once it has the lane.
 * When the admission commits, which of the two goes first is the scheduler's choice, so the
 * race is run many times.
 */
async function cancelDuringAdmission(): Promise<Record<string, unknown>> {
  await t.pool.query(`delete from usher.executions; delete from usher.lanes`);
  const { rows } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('k.one'), ('k.one') returning id`);
  const [head, next] = rows.map((row) => row.id) as [string, string];
  await admitQueued(t.pool);
  // Cancelling the head frees the slot and admits the next, holding the lane and the next's row.
  const admitting = await connection();
  await admitting.client.query('begin');
  await admitting.client.query('select usher.cancel_execution($1)', [head]);
  const canceller = await connection();
  const cancel = canceller.client.query('select id, status, changed from usher.cancel_execution($1)', [next]);
  await waitingOnLock(canceller.pid, 'the cancel to wait on the admitting transaction');
  const holder = await connection();
  await holder.client.query('begin');
  const laneTaken = holder.client.query(`select usher.lock_lane('action:k.one')`);
  await waitingOnLock(holder.pid, 'the lane holder to wait on the lane');
  await admitting.client.query('commit');
  const settled = await outcomes({
    holder: laneTaken
      .then(() => holder.client.query('update usher.executions set updated_at = clock_timestamp() where id = $1', [next]))
      .then(() => holder.client.query('commit'))
      .then(() => 'committed'),
    cancel: cancel.then((result) => result.rows),
  });
  await Promise.all([admitting, canceller, holder].map(({ client }) => client.end()));
  return { ...settled, next };
}

it('a cancel of an execution being admitted takes the lane before the row, so it never deadlocks with a lane holder that writes the row', async () => {
  for (let race = 0; race < 25; race += 1) {
    const { next, ...settled } = await cancelDuringAdmission();
    expect(settled, `race ${race}`).toEqual({ holder: 'committed', cancel: [{ id: next, status: 'cancelled', changed: true }] });
    expect(await checkInvariants(t.pool)).toEqual([]);
  }
});

it('a hand-back that meets a cancel of the same running execution ends it cancelled, not lost with its slot held until the lease expires', async () => {
  const { rows: [first, next] } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('k.one'), ('k.one') returning id`);
  await admitQueued(t.pool);
  const [claim] = await calls.claimScheduled(t.pool, workerId, ['k.one'], 1, 30);
  expect(claim!.id).toBe(first!.id);

  // The cancel makes it canceling and stays open; the hand-back comes in behind it.
  const canceller = await connection();
  await canceller.client.query('begin');
  expect((await canceller.client.query(`select status, changed from usher.cancel_execution($1, 'race')`, [first!.id])).rows)
    .toEqual([{ status: 'canceling', changed: true }]);
  const shutdown = await connection();
  const handBack = calls.handBackExecution(shutdown.client, claim!);
  await waitingOnLock(shutdown.pid, 'the hand-back to wait for the cancel');
  await canceller.client.query('commit');

  expect(await outcomes({ handBack })).toEqual({ handBack: 'cancelled' });
  await admitQueued(t.pool);
  expect((await t.pool.query('select id, status from usher.executions order by id')).rows)
    .toEqual([{ id: first!.id, status: 'cancelled' }, { id: next!.id, status: 'scheduled' }]);
  expect((await t.pool.query(`select active_count from usher.lanes where lane_key = 'action:k.one'`)).rows).toEqual([{ active_count: 1 }]);
  expect(await checkInvariants(t.pool)).toEqual([]);
  await Promise.all([canceller.client.end(), shutdown.client.end()]);
});
