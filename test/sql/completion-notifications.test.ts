/**
 * usher.execution_completed goes out only while a session watches (usher.watch_completions()):
 * every NOTIFY wakes every listening backend of the database, whatever its channel. A watcher that
 * starts while a completing transaction is open must still learn of that completion.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { cancelExecution } from '../../src/queue/cancel.ts';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import type { ClaimedExecution } from '../../src/queue/types.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { collectNotifications } from '../support/notifications.ts';
import { waitFor } from '../support/wait.ts';

const CHANNEL = 'usher.execution_completed';
let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-completion-notifications', host: 'test', pid: 1, concurrency: 10, actions: [{ ref: 'cn.free' }, { ref: 'cn.serial' }],
  });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('cn-serial', 'cn.serial', 1)`);
});
afterAll(() => t.drop());

const sessions: pg.Client[] = [];
const watchLocks = async () => (await t.pool.query<{ pid: number }>(
  `select pid from pg_locks where locktype = 'advisory' and classid = 29298 and objid = 0 and objsubid = 1 and granted
     and database = (select oid from pg_database where datname = current_database()) order by pid`,
)).rows.map((row) => row.pid);

beforeEach(async () => {
  await t.pool.query('delete from usher.executions; delete from usher.lanes');
});
// A watching session left open would make every later completion notify.
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((client) => client.end().catch(() => undefined)));
  await waitFor(async () => (await watchLocks()).length === 0, { what: 'the watch locks of ended sessions to go' });
});

async function running(action: string, count: number): Promise<ClaimedExecution[]> {
  await t.pool.query(
    `insert into usher.executions (action_ref, params) select $1, jsonb_build_object('n', g) from generate_series(1, $2) g`,
    [action, count],
  );
  await admitQueued(t.pool);
  return calls.claimScheduled(t.pool, workerId, [action], count, 30);
}

/** A session that collects usher.execution_completed, watching for it or only listening. */
async function session(start: 'watch' | 'listen') {
  const notifications = await collectNotifications(t, { [CHANNEL]: start === 'watch' ? 'select usher.watch_completions()' : null });
  sessions.push(notifications.client);
  return notifications;
}

const ended = (...payloads: string[]) => payloads.map((payload) => `${CHANNEL}:${payload}`);

describe('usher.execution_completed', () => {
  it('is not sent while no session watches, though a session LISTENs', async () => {
    const listener = await session('listen');
    const [one, two] = await running('cn.free', 2);
    await calls.completeAndClaim(t.pool, [{ claim: one!, resultJson: 'null' }], { workerId, actionRefs: ['cn.free'], limit: 0, leaseSeconds: 30 });
    expect(await calls.failExecution(t.pool, two!, 'boom', null, false)).toBe('failed');
    expect(await listener.settled()).toEqual([]);
  });

  it('names the ended executions to a watching session, whatever ended them', async () => {
    const watcher = await session('watch');
    const [a, b, c] = await running('cn.free', 3);
    await calls.completeAndClaim(t.pool, [{ claim: a!, resultJson: 'null' }, { claim: b!, resultJson: 'null' }],
      { workerId, actionRefs: ['cn.free'], limit: 0, leaseSeconds: 30 });
    expect(await calls.failExecution(t.pool, c!, 'boom', null, false)).toBe('failed');
    const [waiting] = (await t.pool.query<{ id: string }>(
      `insert into usher.executions (action_ref, params) values ('cn.serial', '{}'), ('cn.serial', '{}') returning id`,
    )).rows.slice(1);
    expect((await cancelExecution(t.pool, waiting!.id)).status).toBe('cancelled');
    expect(await watcher.settled()).toEqual(ended(`${a!.id},${b!.id}`, c!.id, waiting!.id));
  });

  it('stops when the watcher unwatches or its session ends, and holds one lock per session however often it watches', async () => {
    const watcher = await session('watch');
    await watcher.client.query('select usher.watch_completions()');
    const pid = (await watcher.client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    expect(await watchLocks()).toEqual([pid]);
    const lockCount = await watcher.client.query<{ n: number }>(
      `select count(*)::int as n from pg_locks where locktype = 'advisory' and classid = 29298 and pid = pg_backend_pid()`);
    expect(lockCount.rows[0]!.n).toBe(1);

    const watching = async (client: pg.Client) => (await client.query<{ w: boolean }>('select usher.watching_completions() as w')).rows[0]!.w;
    expect(await watching(watcher.client)).toBe(true);
    await watcher.client.query('select usher.unwatch_completions()');
    expect(await watchLocks()).toEqual([]);
    expect(await watching(watcher.client)).toBe(false);
    expect((await watcher.client.query('select pg_listening_channels() as c')).rows).toEqual([]);
    const listener = await session('listen');
    const [one] = await running('cn.free', 1);
    expect(await calls.completeExecution(t.pool, one!, 'null')).toBe('completed');
    expect(await listener.settled()).toEqual([]);

    const other = await session('watch');
    expect(await watchLocks()).toHaveLength(1);
    await other.client.end();
    await waitFor(async () => (await watchLocks()).length === 0, { what: 'the watch lock of the ended session to go' });
    const [two] = await running('cn.free', 1);
    expect(await calls.completeExecution(t.pool, two!, 'null')).toBe('completed');
    expect(await listener.settled()).toEqual([]);
  });

  it('reaches a session that watches and ends executions itself', async () => {
    const watcher = await session('watch');
    const [one] = await running('cn.free', 1);
    expect(await calls.completeExecution(watcher.client, one!, 'null')).toBe('completed');
    expect(await watcher.settled()).toEqual(ended(one!.id));
  });

  it('makes a watcher that starts during a completing transaction that saw none wait for its commit, so the watcher reads it ended', async () => {
    const [one] = await running('cn.serial', 1);
    const completing = await t.connect();
    sessions.push(completing);
    await completing.query('begin');
    expect(await calls.completeExecution(completing, one!, 'null')).toBe('completed');

    const late = await t.connect();
    sessions.push(late);
    const latePid = (await late.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
    let watching = false;
    const watched = late.query('select usher.watch_completions()').then(() => { watching = true; });
    await waitFor(async () => (await t.pool.query(
      `select 1 from pg_stat_activity where pid = $1 and wait_event_type = 'Lock' and wait_event = 'advisory'`, [latePid],
    )).rowCount === 1, { what: 'the watcher to wait for the completing transaction' });
    expect(watching).toBe(false);

    await completing.query('commit');
    await watched;
    const { rows } = await late.query<{ status: string }>('select status from usher.executions where id = $1', [one!.id]);
    expect(rows).toEqual([{ status: 'completed' }]);
  });
});
