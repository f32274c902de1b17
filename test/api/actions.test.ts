import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteAction } from '../../src/queue/actions.ts';
import { READ_TOKEN, snapshot, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api.ts';
import { waitFor } from '../support/wait.ts';

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref, description, timeout_seconds) values ('ops.restart', 'Restarts a host', 120), ('ops.ping', null, 600), ('web.fetch', null, 600);
    insert into usher.policies (ref, action_ref, threshold, parameters) values ('restart-per-host', 'ops.restart', 1, '{host}');`);
});
afterAll(() => api.close());

/** An action row as the API must show it, read with SQL of its own. */
async function actionJson(ref: string): Promise<Record<string, unknown>> {
  const { rows } = await api.t.pool.query(
    `select ref, pack_ref, description, enabled, timeout_seconds, max_retries, retry_delay_seconds::float8, retry_backoff_factor::float8,
       retry_max_delay_seconds::float8, retry_jitter::float8, paused_at, pause_reason, created_at, updated_at
     from usher.actions where ref = $1`, [ref]);
  return JSON.parse(JSON.stringify(rows[0])) as Record<string, unknown>;
}

describe('actions', () => {
  it('lists actions by ref, optionally of one pack', async () => {
    const all = await api.request('GET', '/actions', { token: READ_TOKEN });
    expect(all.body).toEqual({
      data: [await actionJson('ops.ping'), await actionJson('ops.restart'), await actionJson('web.fetch')],
      pagination: { page: 1, page_size: 50, total_items: 3, total_pages: 1 },
    });
    const ops = await api.request('GET', '/actions?pack_name=ops&per_page=1&page=2', { token: READ_TOKEN });
    expect(ops.body).toEqual({ data: [await actionJson('ops.restart')], pagination: { page: 2, page_size: 1, total_items: 2, total_pages: 2 } });
  });

  it('reads one action with numbers as numbers, and answers 404 for an unknown one', async () => {
    const res = await api.request('GET', '/actions/ops.restart', { token: READ_TOKEN });
    expect(res.body).toEqual({ data: await actionJson('ops.restart') });
    expect(res.body.data).toMatchObject({ ref: 'ops.restart', pack_ref: 'ops', description: 'Restarts a host', timeout_seconds: 120, retry_jitter: 0.2 });
    const missing = await api.request('GET', '/actions/ops.nope', { token: READ_TOKEN });
    expect([missing.status, missing.body.error.code, missing.body.error.message]).toEqual([404, 'unknown_action', 'unknown action ops.nope']);
  });

  it('creates an action with PUT (201) and changes only the fields given afterwards (200)', async () => {
    const created = await api.request('PUT', '/actions/new.thing', { body: { description: 'New', max_retries: 3, retry_jitter: 0.5 } });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ data: await actionJson('new.thing'), message: 'action created' });
    expect(created.body.data).toMatchObject({ description: 'New', enabled: true, timeout_seconds: 600, max_retries: 3, retry_jitter: 0.5 });
    const updated = await api.request('PUT', '/actions/new.thing', { body: { enabled: false, retry_delay_seconds: 2.5 } });
    expect(updated.status).toBe(200);
    expect(updated.body).toEqual({ data: await actionJson('new.thing'), message: 'action updated' });
    expect(updated.body.data).toMatchObject({ description: 'New', enabled: false, max_retries: 3, retry_jitter: 0.5, retry_delay_seconds: 2.5 });
    const untouched = await api.request('PUT', '/actions/new.thing', { body: {} });
    expect([untouched.status, untouched.body.data]).toEqual([200, updated.body.data]);
  });

  it('refuses settings out of range, naming them', async () => {
    const res = await api.request('PUT', '/actions/new.other', { body: { retry_jitter: 2, timeout_seconds: 1.5, enabled: 'yes' } });
    expect(res.status).toBe(400);
    expect(res.body.error.details).toEqual([
      { location: 'body', field: 'enabled', message: 'Invalid input: expected boolean, received string' },
      { location: 'body', field: 'timeout_seconds', message: 'Invalid input: expected int, received number' },
      { location: 'body', field: 'retry_jitter', message: 'Too big: expected number to be <=1' },
    ]);
  });

  it('pauses and resumes admission of an action', async () => {
    const paused = await api.request('POST', '/actions/ops.ping/pause', { body: { reason: 'maintenance' } });
    expect(paused.status).toBe(200);
    expect(paused.body).toEqual({ data: await actionJson('ops.ping'), message: 'action paused' });
    expect(paused.body.data).toMatchObject({ pause_reason: 'maintenance', paused_at: expect.any(String) });
    const resumed = await api.request('POST', '/actions/ops.ping/resume');
    expect(resumed.body).toEqual({ data: await actionJson('ops.ping'), message: 'action resumed' });
    expect(resumed.body.data).toMatchObject({ pause_reason: null, paused_at: null });
    const unknown = await api.request('POST', '/actions/ops.nope/pause');
    expect([unknown.status, unknown.body.error.code]).toEqual([404, 'unknown_action']);
  });

  it('refuses to delete an action with executions that have not ended (409), then deletes it with its policies', async () => {
    const { rows: [execution] } = await api.t.pool.query(`insert into usher.executions (action_ref, params) values ('ops.restart', '{"host": "a"}') returning id`);
    const before = await snapshot(api.t.pool);
    const busy = await api.request('DELETE', '/actions/ops.restart');
    expect(busy.status).toBe(409);
    expect(busy.body.error).toEqual({
      code: 'action_busy', request_id: expect.any(String),
      message: 'action ops.restart has 1 executions that have not ended; cancel them or let them finish first',
    });
    expect(await snapshot(api.t.pool)).toEqual(before);
    await api.request('POST', `/executions/${execution.id}/cancel`);
    const expected = await actionJson('ops.restart');
    const deleted = await api.request('DELETE', '/actions/ops.restart');
    expect(deleted.body).toEqual({ data: expected, message: 'action deleted' });
    const left = await api.t.pool.query(`select (select count(*)::int from usher.actions where ref = 'ops.restart') as actions,
      (select count(*)::int from usher.policies where action_ref = 'ops.restart') as policies`);
    expect(left.rows).toEqual([{ actions: 0, policies: 0 }]);
    expect((await api.request('DELETE', '/actions/ops.restart')).status).toBe(404);
  });

  it('waits for a transaction still inserting executions of the action, then counts them (no execution loses its action)', async () => {
    await api.t.pool.query(`insert into usher.actions (ref) values ('ops.racy')`);
    const producer = await api.t.connect();
    await producer.query('begin');
    await producer.query(`insert into usher.executions (action_ref, params) values ('ops.racy', '{}')`);
    const deleting = api.request('DELETE', '/actions/ops.racy');
    await waitFor(async () => {
      const { rows } = await api.t.pool.query(`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted
        and database = (select oid from pg_database where datname = current_database())`);
      return rows[0].n === 1;
    }, { what: 'the delete waiting for the open insert' });
    await producer.query('commit');
    const refused = await deleting;
    expect([refused.status, refused.body.error.message]).toEqual([409, 'action ops.racy has 1 executions that have not ended; cancel them or let them finish first']);
    expect((await api.t.pool.query(`select count(*)::int as n from usher.actions where ref = 'ops.racy'`)).rows[0].n).toBe(1);
    await api.t.pool.query(`delete from usher.executions where action_ref = 'ops.racy'; delete from usher.actions where ref = 'ops.racy'`);
  });

  it('gives up after the lock timeout while the inserting transaction stays open, changing nothing', async () => {
    await api.t.pool.query(`insert into usher.actions (ref) values ('ops.idle')`);
    const producer = await api.t.connect();
    await producer.query('begin');
    await producer.query(`insert into usher.executions (action_ref, params) values ('ops.idle', '{}')`);
    expect(await deleteAction(api.t.pool, 'ops.idle', { lockTimeoutMs: 100 })).toEqual({ outcome: 'enqueue_open' });
    await producer.query('rollback');
    expect((await deleteAction(api.t.pool, 'ops.idle')).outcome).toBe('deleted');
    // An insert that starts after the delete finds the action gone.
    await expect(producer.query(`insert into usher.executions (action_ref, params) values ('ops.idle', '{}')`)).rejects.toThrow('unknown action');
  });
});

describe('POST /actions/{ref}/cancel-waiting', () => {
  it('cancels every execution of the action that has not started, leaving running ones and other actions, and answers the count', async () => {
    await api.t.pool.query(`insert into usher.actions (ref) values ('ops.purge')`);
    const { rows: inserted } = await api.t.pool.query<{ id: string }>(
      `insert into usher.executions (action_ref, params) select 'ops.purge', jsonb_build_object('n', n) from generate_series(1, 5) n returning id`);
    await api.t.pool.query(`insert into usher.executions (action_ref, run_at) values ('ops.purge', now() + interval '1 day')`);
    // One of them is running: a purge leaves it to its worker.
    await api.t.pool.query(`update usher.executions set status = 'running', worker_id = null, attempt = 1, lease_token = gen_random_uuid(),
      lease_expires_at = now() + interval '1 minute', started_at = now() where id = $1`, [inserted[0]!.id]);
    const other = await api.request('POST', '/executions/execute', { body: { action_ref: 'ops.ping', parameters: {} } });

    const res = await api.request('POST', '/actions/ops.purge/cancel-waiting', { body: { reason: 'bad deploy' } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ data: { action_ref: 'ops.purge', cancelled: 5 }, message: '5 waiting executions cancelled' });
    const { rows } = await api.t.pool.query(`select status, result, count(*)::int as n from usher.executions where action_ref = 'ops.purge'
      group by status, result order by status`);
    expect(rows).toEqual([
      { status: 'cancelled', result: { reason: 'bad deploy' }, n: 5 },
      { status: 'running', result: null, n: 1 },
    ]);
    expect((await api.request('GET', `/executions/${other.body.data.id}`, { token: READ_TOKEN })).body.data.status).toBe('scheduled');

    const again = await api.request('POST', '/actions/ops.purge/cancel-waiting', { body: {} });
    expect(again.body).toEqual({ data: { action_ref: 'ops.purge', cancelled: 0 }, message: '0 waiting executions cancelled' });
    await api.t.pool.query(`delete from usher.executions where action_ref = 'ops.purge'; delete from usher.actions where ref = 'ops.purge'`);
  });

  it('answers 404 for an unknown action and 403 to a write token, changing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const unknown = await api.request('POST', '/actions/ops.nope/cancel-waiting', { body: {} });
    expect([unknown.status, unknown.body.error.code, unknown.body.error.message]).toEqual([404, 'unknown_action', 'unknown action ops.nope']);
    const refused = await api.request('POST', '/actions/ops.ping/cancel-waiting', { token: WRITE_TOKEN, body: {} });
    expect([refused.status, refused.body.error.code]).toEqual([403, 'forbidden']);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });
});

describe('queue statistics and lanes', () => {
  beforeAll(async () => {
    await api.t.pool.query(`
      insert into usher.actions (ref) values ('q.limited');
      insert into usher.policies (ref, action_ref, threshold, parameters) values ('q-two', 'q.limited', 1, '{host}');
      insert into usher.executions (action_ref, params) values ('q.limited', '{"host": "a"}'), ('q.limited', '{"host": "a"}'), ('q.limited', '{"host": "b"}');`);
    await api.t.pool.query('call usher.admit_queued()');
  });

  it('answers the queue statistics of one action, and 404 for an unknown one', async () => {
    const res = await api.request('GET', '/actions/q.limited/queue-stats', { token: READ_TOKEN });
    const { rows } = await api.t.pool.query(`select min(created_at) filter (where status = 'requested') as oldest, max(updated_at) as last
      from usher.executions where action_ref = 'q.limited'`);
    expect(res.body).toEqual({
      data: {
        action_ref: 'q.limited', queue_length: 1, active_count: 2, max_concurrent: 1,
        oldest_enqueued_at: rows[0].oldest.toISOString(), total_enqueued: 3, total_completed: 0, last_updated: rows[0].last.toISOString(),
      },
    });
    const missing = await api.request('GET', '/actions/q.nope/queue-stats', { token: READ_TOKEN });
    expect([missing.status, missing.body.error.code]).toEqual([404, 'unknown_action']);
  });

  it('lists the queue statistics of every action by ref', async () => {
    const res = await api.request('GET', '/queue-stats?per_page=2', { token: READ_TOKEN });
    expect(res.body.data.map((row: { action_ref: string }) => row.action_ref)).toEqual(['new.thing', 'ops.ping']);
    expect(res.body.pagination).toEqual({ page: 1, page_size: 2, total_items: 4, total_pages: 2 });
  });

  it('lists the lanes of an action with their counts and policy', async () => {
    const res = await api.request('GET', '/actions/q.limited/lanes', { token: READ_TOKEN });
    expect(res.status).toBe(200);
    const lane = (group: string, queue: number, active: number) => ({
      lane_key: `action:q.limited#["${group}"]`, scope: 'action', scope_ref: 'q.limited', group_key: [group],
      queue_length: queue, active_count: active, threshold: 1, policy_ref: 'q-two',
      oldest_enqueued_at: queue > 0 ? expect.any(String) : null, total_admitted: 1, paused_until: null, pause_reason: null,
      blocked_by: null, blocked_reason: null, next_retry_at: null,
    });
    expect(res.body).toEqual({ data: [lane('a', 1, 1), lane('b', 0, 1)], pagination: { page: 1, page_size: 50, total_items: 2, total_pages: 1 } });
    expect((await api.request('GET', '/actions/web.fetch/lanes')).body.data).toEqual([]);
    expect((await api.request('GET', '/actions/q.nope/lanes')).status).toBe(404);
  });
});
