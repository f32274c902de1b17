import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsherError } from '../../src/errors.ts';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { collectNotifications } from '../support/notifications.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`
    insert into usher.actions (ref) values ('demo.free'), ('demo.limited'), ('demo.off');
    update usher.actions set enabled = false where ref = 'demo.off';
    insert into usher.policies (ref, action_ref, threshold) values ('limited', 'demo.limited', 2);`);
});
afterAll(() => t.drop());

async function sqlError(sql: string, values: unknown[] = []): Promise<pg.DatabaseError> {
  const error = await t.pool.query(sql, values).then(() => undefined, (e: unknown) => e);
  expect(error, `expected ${sql} to fail`).toBeDefined();
  return error as pg.DatabaseError;
}

const wakeups = () => collectNotifications(t, { 'usher.execution_requested': null, 'usher.execution_scheduled': null });

describe('enqueue by plain SQL', () => {
  it('places an execution of an action without policy straight into scheduled, and one with a policy into its lane', async () => {
    const { rows } = await t.pool.query(
      `insert into usher.executions (action_ref, params) values ('demo.free', '{"n": 1}'), ('demo.limited', '{"n": 2}')
       returning action_ref, status, lane_key, timeout_seconds, attempt, scheduled_at is not null as admitted`,
    );
    expect(rows).toEqual([
      { action_ref: 'demo.free', status: 'scheduled', lane_key: null, timeout_seconds: 600, attempt: 0, admitted: true },
      { action_ref: 'demo.limited', status: 'requested', lane_key: 'action:demo.limited', timeout_seconds: 600, attempt: 0, admitted: false },
    ]);
  });

  it('leaves nothing behind when the inserting transaction rolls back', async () => {
    const before = await t.pool.query('select count(*)::int as n from usher.executions');
    const client = await t.connect();
    await client.query('begin');
    await client.query(`insert into usher.executions (action_ref) values ('demo.limited')`);
    await enqueue(client, { action_ref: 'demo.free', params: { inside: 'transaction' } });
    const inside = await client.query('select count(*)::int as n from usher.executions');
    expect(inside.rows[0].n).toBe(before.rows[0].n + 2);
    await client.query('rollback');
    const after = await t.pool.query('select count(*)::int as n from usher.executions');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('accepts multi-row and INSERT ... SELECT bulk inserts, with ids in insert order', async () => {
    const { rows } = await t.pool.query(
      `insert into usher.executions (action_ref, params)
       select 'demo.limited', jsonb_build_object('n', g) from generate_series(1, 500) g
       returning id, (params->>'n')::int as n`,
    );
    expect(rows).toHaveLength(500);
    const byId = [...rows].sort((a, b) => Number(a.id) - Number(b.id));
    expect(byId.map((row) => row.n)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
  });

  it('rejects an unknown action, naming it, and inserts nothing of the statement', async () => {
    const before = await t.pool.query('select count(*)::int as n from usher.executions');
    const error = await sqlError(`insert into usher.executions (action_ref) values ('demo.free'), ('demo.nope')`);
    expect(error.code).toBe('23503');
    expect(error.message).toBe(`usher.executions: unknown action 'demo.nope'`);
    const after = await t.pool.query('select count(*)::int as n from usher.executions');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('rejects a disabled action, params that are not a JSON object, and a status or managed column set by the caller', async () => {
    expect((await sqlError(`insert into usher.executions (action_ref) values ('demo.off')`)).message)
      .toBe('usher.executions: action demo.off is disabled');
    expect((await sqlError(`insert into usher.executions (action_ref, params) values ('demo.free', '[1, 2]')`)).message)
      .toBe('usher.executions: params must be a JSON object, got a JSON array');
    expect((await sqlError(`insert into usher.executions (action_ref, params) values ('demo.free', '"text"')`)).constraint)
      .toBe('executions_params_is_object');
    expect((await sqlError(`insert into usher.executions (action_ref, params) values ('demo.free', null)`)).code).toBe('23502');
    const status = await sqlError(`insert into usher.executions (action_ref, status) values ('demo.free', 'completed')`);
    expect(status.message).toBe(`usher.executions: status is set by Usher; insert without it (got 'completed')`);
    expect(status.constraint).toBe('executions_insert_status_is_requested');
    const managed = await sqlError(`insert into usher.executions (action_ref, lease_token) values ('demo.free', gen_random_uuid())`);
    expect(managed.constraint).toBe('executions_insert_managed_columns_unset');
    expect((await sqlError(`insert into usher.executions (action_ref, timeout_seconds) values ('demo.free', 0)`)).constraint)
      .toBe('executions_timeout_seconds_positive');
  });

  it('wakes the executor with one NOTIFY per committed transaction, and none for a rollback', async () => {
    const listener = await wakeups();
    const producer = await t.connect();
    await producer.query('begin');
    for (let i = 0; i < 5; i += 1) await producer.query(`insert into usher.executions (action_ref) values ('demo.limited')`);
    await producer.query(`insert into usher.executions (action_ref) select 'demo.limited' from generate_series(1, 100)`);
    await producer.query('rollback');
    await producer.query('begin');
    for (let i = 0; i < 5; i += 1) await producer.query(`insert into usher.executions (action_ref) values ('demo.limited')`);
    await producer.query(`insert into usher.executions (action_ref) values ('demo.free'), ('demo.free')`);
    await producer.query('commit');
    expect(await listener.settled()).toEqual(['usher.execution_requested:', 'usher.execution_scheduled:']);
  });

  it('sends no wake-up for a producer that turned it off (usher.enqueue_wakeup), and one again once it is on', async () => {
    const { settled } = await wakeups();

    const producer = await t.connect();
    await producer.query('set usher.enqueue_wakeup = off');
    const { rows } = await producer.query(
      `insert into usher.executions (action_ref) values ('demo.free'), ('demo.limited') returning action_ref, status`);
    expect(rows).toEqual([{ action_ref: 'demo.free', status: 'scheduled' }, { action_ref: 'demo.limited', status: 'requested' }]);
    expect(await settled()).toEqual([]);

    // Only for the transaction: the session's next insert wakes again.
    await producer.query('reset usher.enqueue_wakeup');
    await producer.query('begin');
    await producer.query('set local usher.enqueue_wakeup = off');
    await producer.query(`insert into usher.executions (action_ref) values ('demo.limited')`);
    await producer.query('commit');
    expect(await settled()).toEqual([]);
    await producer.query(`insert into usher.executions (action_ref) values ('demo.free'), ('demo.limited')`);
    expect(await settled()).toEqual(['usher.execution_requested:', 'usher.execution_scheduled:']);
    await producer.query('set usher.enqueue_wakeup = on');
    await producer.query(`insert into usher.executions (action_ref) values ('demo.limited')`);
    expect(await settled()).toEqual(['usher.execution_requested:']);
  });

  it('refuses an insert when usher.enqueue_wakeup is neither on nor off, and inserts nothing', async () => {
    const before = (await t.pool.query('select count(*)::int as n from usher.executions')).rows[0].n;
    const producer = await t.connect();
    await producer.query(`set usher.enqueue_wakeup = 'of'`);
    const error = await producer.query(`insert into usher.executions (action_ref) values ('demo.free')`).then(() => undefined, (e: unknown) => e as pg.DatabaseError);
    expect(error?.message).toBe(`usher.enqueue_wakeup must be on or off, got 'of'`);
    expect(error?.code).toBe('22023');
    expect((await t.pool.query('select count(*)::int as n from usher.executions')).rows[0].n).toBe(before);
  });
});

describe('enqueue from TypeScript', () => {
  it('returns the new rows with string ids, in the order given', async () => {
    const rows = await enqueueMany(t.pool, [
      { action_ref: 'demo.limited', params: { n: 'a' } },
      { action_ref: 'demo.free', params: { n: 'b' }, timeout_seconds: 5 },
    ]);
    expect(rows.map((row) => [typeof row.id, row.action_ref, row.params, row.status, row.timeout_seconds])).toEqual([
      ['string', 'demo.limited', { n: 'a' }, 'requested', 600],
      ['string', 'demo.free', { n: 'b' }, 'scheduled', 5],
    ]);
    expect(BigInt(rows[0]!.id) < BigInt(rows[1]!.id)).toBe(true);
  });

  it('turns database refusals into typed errors that keep the database message as cause', async () => {
    const unknown = await enqueue(t.pool, { action_ref: 'demo.nope' }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(UsherError);
    expect((unknown as UsherError).code).toBe('unknown_action');
    expect((unknown as UsherError).message).toContain(`'demo.nope'`);
    expect((unknown as UsherError).cause).toBeDefined();
    const disabled = await enqueue(t.pool, { action_ref: 'demo.off' }).catch((e: unknown) => e);
    expect((disabled as UsherError).code).toBe('action_disabled');
    const params = await enqueue(t.pool, { action_ref: 'demo.free', params: [1] as never }).catch((e: unknown) => e);
    expect((params as UsherError).code).toBe('invalid_params');
  });
});
