/**
 * usher.cancel_waiting: purging an action's queue. Every execution that has not started (delayed,
 * waiting, admitted) ends cancelled in batches, admitted ones give their slots back without
 * admitting what the purge is about to cancel, running ones and other actions are left alone.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { cancelWaiting } from '../../src/queue/cancel.ts';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { connectionWithPid, waitingOnLock } from '../support/locks.ts';
import { claimOne, completeClaimed, registerTestWorker } from '../support/queue-states.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`
    insert into usher.actions (ref) values ('cw.lanes'), ('cw.other');
    insert into usher.policies (ref, action_ref, threshold, parameters) values ('cw-lanes', 'cw.lanes', 2, '{lane}');`);
  workerId = await registerTestWorker(t.pool, 'cancel-waiting', ['cw.lanes', 'cw.other']);
});
afterAll(() => t.drop());
beforeEach(async () => {
  await t.pool.query('delete from usher.executions; delete from usher.lanes');
});

const q = async (sql: string, values: unknown[] = []) => (await t.pool.query(sql, values)).rows;
const statusCounts = async (action: string) => Object.fromEntries((await q(
  'select status, count(*)::int as n from usher.executions where action_ref = $1 group by status', [action])).map((row) => [row.status, row.n]));

/** Two lanes of threshold 2, five each: lane 0 has one running, one admitted, three waiting; lane 1 two admitted, three waiting. */
async function fillLanes(): Promise<{ running: { id: string; lease_token: string } }> {
  await q(`insert into usher.executions (action_ref, params) select 'cw.lanes', jsonb_build_object('lane', n % 2) from generate_series(0, 9) n order by n`);
  await admitQueued(t.pool);
  const running = await claimOne(t.pool, workerId, 'cw.lanes');
  expect(await q('select params from usher.executions where id = $1', [running.id])).toEqual([{ params: { lane: 0 } }]);
  await q(`insert into usher.executions (action_ref, params, run_at) values ('cw.lanes', '{"lane": 1}', now() + interval '1 hour')`);
  await q(`insert into usher.executions (action_ref) values ('cw.other'), ('cw.other')`);
  return { running };
}

describe('usher.cancel_waiting', () => {
  it('cancels what has not started, in batches, newest first, leaving the running one and other actions; no slot is lost or refilled', async () => {
    const { running } = await fillLanes();
    expect(await statusCounts('cw.lanes')).toEqual({ running: 1, scheduled: 3, requested: 6, delayed: 1 });
    const admittedBefore = await q('select lane_key, total_admitted from usher.lanes order by lane_key');

    const batches: number[] = [];
    for (let n = -1; n !== 0;) {
      n = (await q(`select usher.cancel_waiting('cw.lanes', 'purge', 3) as n`))[0]!.n;
      batches.push(n);
    }
    expect(batches).toEqual([3, 3, 3, 1, 0]);
    expect(await statusCounts('cw.lanes')).toEqual({ running: 1, cancelled: 10 });
    expect(await q(`select distinct result, completed_at is not null as ended from usher.executions where status = 'cancelled'`))
      .toEqual([{ result: { reason: 'purge' }, ended: true }]);
    expect(await statusCounts('cw.other')).toEqual({ scheduled: 2 });
    // Newest first: each admitted head went last, with nothing of its lane left to admit.
    expect(await q('select lane_key, total_admitted from usher.lanes order by lane_key')).toEqual(admittedBefore);
    expect(await q('select lane_key, active_count from usher.lanes order by lane_key'))
      .toEqual([{ lane_key: 'action:cw.lanes#[0]', active_count: 1 }, { lane_key: 'action:cw.lanes#[1]', active_count: 0 }]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);

    // The running one finishes normally and its lane has nothing left to start.
    await completeClaimed(t.pool, running, { ok: true });
    expect(await statusCounts('cw.lanes')).toEqual({ completed: 1, cancelled: 10 });
    expect(await q('select lane_key, active_count from usher.lanes where active_count <> 0')).toEqual([]);
  });

  it('keeps executions above p_up_to_id, and refuses a limit below 1 with nothing changed', async () => {
    await fillLanes();
    const [{ bound }] = await q(`select max(id)::text as bound from usher.executions where action_ref = 'cw.lanes'`) as [{ bound: string }];
    const [{ id: later }] = await q(`insert into usher.executions (action_ref, params) values ('cw.lanes', '{"lane": 1}') returning id::text`) as [{ id: string }];
    expect((await q(`select usher.cancel_waiting('cw.lanes', null, 100, $1) as n`, [bound]))[0]!.n).toBe(10);
    // Kept, and admitted into the slot its lane's cancelled heads gave back.
    expect(await q('select status, result from usher.executions where id = $1', [later])).toEqual([{ status: 'scheduled', result: null }]);
    const reasons = await q(`select distinct result from usher.executions where status = 'cancelled'`);
    expect(reasons).toEqual([{ result: { reason: 'cancelled by request' } }]);

    const before = await q('select id, status, updated_at from usher.executions order by id');
    for (const limit of [0, -1, null]) {
      const error = await t.pool.query(`select usher.cancel_waiting('cw.lanes', null, $1)`, [limit]).then(() => undefined, (caught: unknown) => caught);
      expect([limit, (error as { code?: string }).code, (error as Error).message])
        .toEqual([limit, '22023', `usher.cancel_waiting: limit must be >= 1 (got ${limit ?? '<NULL>'})`]);
    }
    expect(await q('select id, status, updated_at from usher.executions order by id')).toEqual(before);
  });

  it('waits for a row another transaction holds, cancelling nothing meanwhile, and cancels it once that transaction is gone', async () => {
    await q(`insert into usher.executions (action_ref) values ('cw.other'), ('cw.other')`);
    const [first, second] = (await q(`select id::text from usher.executions order by id`)).map((row) => row.id as string);
    const holder = await t.connect();
    const purger = await connectionWithPid(t);
    try {
      await holder.query('begin');
      // A claim in progress holds its row like this (and claims skip rows a purge holds).
      await holder.query('select 1 from usher.executions where id = $1 for update', [first]);
      const purge = purger.client.query(`select usher.cancel_waiting('cw.other', 'purge', 10) as n`);
      await waitingOnLock(t.pool, purger.pid, 'the purge waiting for the held row');
      expect(await q('select id::text, status from usher.executions order by id'))
        .toEqual([{ id: first, status: 'scheduled' }, { id: second, status: 'scheduled' }]);
      await holder.query('commit');
      expect((await purge).rows).toEqual([{ n: 2 }]);
    } finally {
      await holder.end();
      await purger.client.end();
    }
    expect(await statusCounts('cw.other')).toEqual({ cancelled: 2 });
  });
});

describe('lock order', () => {
  it('takes a lane that has no row yet before the executions in it, so an admission creating that lane cannot deadlock with it', async () => {
    await q(`insert into usher.executions (action_ref, params) select 'cw.lanes', '{"lane": 7}' from generate_series(1, 3)`);
    const [head] = (await q(`select id::text from usher.executions order by id`)).map((row) => row.id as string);
    // The lane's row is gone (pruned while idle, as usher.delete_idle_lanes does); an admission is
    // about to create it and then lock the head it admits.
    await q(`delete from usher.lanes`);
    const admitter = await connectionWithPid(t, 'set deadlock_timeout = 100');
    const purger = await connectionWithPid(t, 'set deadlock_timeout = 100');
    try {
      await admitter.client.query('begin');
      await admitter.client.query(`select usher.lock_lane('action:cw.lanes#[7]')`);
      const purge = purger.client.query(`select usher.cancel_waiting('cw.lanes', 'purge', 10) as n`).then((res) => res.rows, (error: Error) => error);
      await waitingOnLock(t.pool, purger.pid, 'the purge waiting for the lane being created');
      // Before the fix the purge held the executions by now, and this waited for it: a deadlock.
      await admitter.client.query('select 1 from usher.executions where id = $1 for update', [head]);
      await admitter.client.query('commit');
      expect(await purge).toEqual([{ n: 3 }]);
    } finally {
      await admitter.client.end();
      await purger.client.end();
    }
    expect(await statusCounts('cw.lanes')).toEqual({ cancelled: 3 });
  });
});

describe('cancelWaiting (the API\'s loop)', () => {
  it('empties the queue in batches and answers the total; 0 for an action with nothing waiting', async () => {
    await fillLanes();
    expect(await cancelWaiting(t.pool, 'cw.lanes', 'emptied', 4)).toBe(10);
    expect(await statusCounts('cw.lanes')).toEqual({ running: 1, cancelled: 10 });
    expect(await cancelWaiting(t.pool, 'cw.lanes', 'again', 4)).toBe(0);
    expect(await cancelWaiting(t.pool, 'cw.nothing', undefined)).toBe(0);
  });
});
