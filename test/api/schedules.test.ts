/**
 * /schedules: cron schedules through the HTTP API, down to an `usher executor` firing one that the
 * API created. Every response is also checked against its documented schema (support/api.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, READ_TOKEN, snapshot, startTestApi, tokens, type TestApi } from '../support/api.ts';
import { killAll, startExecutor } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';

const BILLING_ADMIN = 'billing-admin-schedules-0123456789';
let api: TestApi;

beforeAll(async () => {
  api = await startTestApi({ apiTokens: [...tokens, { role: 'admin', token: BILLING_ADMIN, packs: ['billing'] }] });
  await api.t.pool.query(`insert into usher.actions (ref) values ('demo.report'), ('demo.other'), ('billing.invoice'), ('ops.rotate')`);
});
afterAll(async () => {
  await killAll();
  await api.close();
});

const row = async (ref: string) => (await api.t.pool.query('select * from usher.schedules where ref = $1', [ref])).rows[0];
const put = (ref: string, body: Record<string, unknown>, token = ADMIN_TOKEN) => api.request('PUT', `/schedules/${ref}`, { body, token });

describe('PUT /schedules/{ref}', () => {
  it('creates a schedule (201) with defaults, answering the stored row', async () => {
    const res = await put('nightly', { action_ref: 'demo.report', cron: '0 3 * * *' });
    expect(res.status).toBe(201);
    expect(res.body.message).toBe('schedule created');
    expect(res.body.data).toMatchObject({
      ref: 'nightly', action_ref: 'demo.report', cron: '0 3 * * *', timezone: 'UTC', params: {}, enabled: true, max_backfill: 1,
      description: null, next_tick_at: null, last_tick_at: null, error: null,
    });
    const stored = await row('nightly');
    expect(res.body.data.id).toBe(stored.id);
    expect(res.body.data.created_at).toBe(stored.created_at.toISOString());
  });

  it('replaces the whole schedule (200), keeping its id and created_at; a new cron starts afresh, an unchanged one keeps its next tick', async () => {
    await put('weekly', { action_ref: 'demo.report', cron: '0 4 * * 1', params: { a: 1 }, max_backfill: 3, description: 'x' });
    const created = await row('weekly');
    await api.t.pool.query(`update usher.schedules set next_tick_at = '2030-01-07T04:00:00Z' where ref = 'weekly'`);

    const same = await put('weekly', { action_ref: 'demo.other', cron: '0 4 * * 1', timezone: 'Europe/Paris' });
    expect(same.status).toBe(200);
    expect(same.body.message).toBe('schedule replaced');
    // A time zone change is a new verdict: the next tick is computed again.
    expect(same.body.data).toMatchObject({
      id: created.id, action_ref: 'demo.other', timezone: 'Europe/Paris', params: {}, max_backfill: 1, description: null, next_tick_at: null,
    });
    await api.t.pool.query(`update usher.schedules set next_tick_at = '2030-01-07T03:00:00Z' where ref = 'weekly'`);
    const unchanged = await put('weekly', { action_ref: 'demo.other', cron: '0 4 * * 1', timezone: 'Europe/Paris', params: { b: 2 } });
    expect(unchanged.body.data).toMatchObject({ params: { b: 2 }, next_tick_at: '2030-01-07T03:00:00.000Z' });
    expect(unchanged.body.data.created_at).toBe(created.created_at.toISOString());
    const recron = await put('weekly', { action_ref: 'demo.other', cron: '0 5 * * 1', timezone: 'Europe/Paris', params: { b: 2 } });
    expect(recron.body.data).toMatchObject({ cron: '0 5 * * 1', next_tick_at: null });
  });

  it('refuses a cron or time zone the executor could not use, an unknown action and bad fields, naming the field and writing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const cases: [Record<string, unknown>, number, string, { field: string; message: string }[] | undefined][] = [
      [{ action_ref: 'demo.report', cron: '61 * * * *' }, 400, 'invalid_request', [{ field: 'cron', message: expect.stringMatching(/^invalid cron expression "61 \* \* \* \*": /) }]],
      [{ action_ref: 'demo.report', cron: 'every day' }, 400, 'invalid_request', [{ field: 'cron', message: expect.stringMatching(/^invalid cron expression "every day": /) }]],
      [{ action_ref: 'demo.report', cron: '0 0 0 1 1 * 2020' }, 400, 'invalid_request', [{ field: 'cron', message: 'cron expression "0 0 0 1 1 * 2020" has no tick after now' }]],
      [{ action_ref: 'demo.report', cron: '0 3 * * *', timezone: 'Mars/Olympus' }, 400, 'invalid_request',
        [{ field: 'timezone', message: 'unknown time zone "Mars/Olympus" (Node.js has no such IANA zone)' }]],
      [{ action_ref: 'demo.nope', cron: '0 3 * * *' }, 404, 'unknown_action', undefined],
      [{ action_ref: 'demo.report', cron: '0 3 * * *', params: [1], max_backfill: 1001, at: 1 }, 400, 'invalid_request', [
        { field: 'params', message: 'Invalid input: expected record, received array' },
        { field: 'max_backfill', message: 'Too big: expected number to be <=1000' },
        { field: 'at', message: 'unknown field' },
      ]],
    ];
    for (const [body, status, code, details] of cases) {
      const res = await put('refused', body);
      expect([JSON.stringify(body), res.status, res.body.error.code]).toEqual([JSON.stringify(body), status, code]);
      if (details) expect(res.body.error.details).toEqual(details.map((detail) => ({ location: 'body', ...detail })));
    }
    expect((await put('refused', { action_ref: 'demo.nope', cron: '0 3 * * *' })).body.error.message).toBe('unknown action demo.nope');
    const badRef = await api.request('PUT', '/schedules/Bad%20Ref', { body: { action_ref: 'demo.report', cron: '0 3 * * *' } });
    expect([badRef.status, badRef.body.error.details[0].field]).toEqual([400, 'ref']);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('needs an admin token, and records each change in the audit log', async () => {
    const before = await snapshot(api.t.pool);
    const refused = await put('audited', { action_ref: 'demo.report', cron: '@daily' }, READ_TOKEN);
    expect([refused.status, refused.body.error.code]).toEqual([403, 'forbidden']);
    expect(await snapshot(api.t.pool)).toEqual(before);
    const auditBefore = Number((await api.t.pool.query('select max(id) as id from usher.api_audit_log')).rows[0].id ?? 0);
    expect((await put('audited', { action_ref: 'demo.report', cron: '@daily' })).status).toBe(201);
    expect((await api.request('DELETE', '/schedules/audited')).status).toBe(200);
    // Each row gets its status once the response has gone out.
    const rows = await waitFor(async () => {
      const { rows: audited } = await api.t.pool.query(
        'select operation, method, target, status, request -> \'body\' as body from usher.api_audit_log where id > $1 order by id', [auditBefore]);
      return audited.length === 2 && audited.every((audit) => audit.status !== null) && audited;
    });
    expect(rows).toEqual([
      { operation: 'putSchedule', method: 'PUT', target: 'audited', status: 201, body: { action_ref: 'demo.report', cron: '@daily' } },
      { operation: 'deleteSchedule', method: 'DELETE', target: 'audited', status: 200, body: {} },
    ]);
  });
});

describe('GET and DELETE', () => {
  it('lists by ref with filters and pages, reads one, deletes it; an unknown ref is 404', async () => {
    await api.t.pool.query('delete from usher.schedules');
    for (const [ref, action, enabled] of [['c', 'demo.other', true], ['a', 'demo.report', true], ['b', 'demo.report', false]] as const) {
      expect((await put(ref, { action_ref: action, cron: '*/5 * * * *', enabled })).status).toBe(201);
    }
    const refs = async (query: string) => (await api.request('GET', `/schedules${query}`, { token: READ_TOKEN })).body.data
      .map((schedule: { ref: string }) => schedule.ref);
    expect(await refs('')).toEqual(['a', 'b', 'c']);
    expect(await refs('?action_ref=demo.report')).toEqual(['a', 'b']);
    expect(await refs('?action_ref=demo.*&enabled=true')).toEqual(['a', 'c']);
    expect(await refs('?enabled=false')).toEqual(['b']);
    const paged = await api.request('GET', '/schedules?per_page=2&page=2', { token: READ_TOKEN });
    expect([paged.body.data.map((schedule: { ref: string }) => schedule.ref), paged.body.pagination])
      .toEqual([['c'], { page: 2, page_size: 2, total_items: 3, total_pages: 2 }]);
    expect((await api.request('GET', '/schedules?action_ref=nope', { token: READ_TOKEN })).status).toBe(400);

    const one = await api.request('GET', '/schedules/b', { token: READ_TOKEN });
    expect(one.body.data).toMatchObject({ ref: 'b', action_ref: 'demo.report', enabled: false });
    const deleted = await api.request('DELETE', '/schedules/b');
    expect([deleted.status, deleted.body.message, deleted.body.data.ref]).toEqual([200, 'schedule deleted', 'b']);
    expect(await row('b')).toBeUndefined();
    for (const method of ['GET', 'DELETE']) {
      const missing = await api.request(method, '/schedules/b');
      expect([missing.status, missing.body.error.code, missing.body.error.message]).toEqual([404, 'schedule_not_found', 'no schedule named b']);
    }
  });
});

describe('a token limited to pack billing', () => {
  it('writes and sees schedules of its packs only; one outside them is refused (403) or not found (404), unchanged', async () => {
    await api.t.pool.query('delete from usher.schedules');
    expect((await put('ops-rotate', { action_ref: 'ops.rotate', cron: '@hourly' })).status).toBe(201);
    expect((await put('invoices', { action_ref: 'billing.invoice', cron: '@daily' }, BILLING_ADMIN)).status).toBe(201);
    const before = await snapshot(api.t.pool);
    const outside = await put('new-ops', { action_ref: 'ops.rotate', cron: '@daily' }, BILLING_ADMIN);
    expect([outside.status, outside.body.error.message]).toEqual([403, 'this token is limited to the packs billing; action ops.rotate is outside them']);
    // Taking over another pack's schedule by naming it with an action of its own pack.
    const takeover = await put('ops-rotate', { action_ref: 'billing.invoice', cron: '@daily' }, BILLING_ADMIN);
    expect([takeover.status, takeover.body.error.code]).toEqual([404, 'schedule_not_found']);
    for (const method of ['GET', 'DELETE']) {
      const hidden = await api.request(method, '/schedules/ops-rotate', { token: BILLING_ADMIN });
      expect([hidden.status, hidden.body.error.message]).toEqual([404, 'no schedule named ops-rotate']);
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
    const listed = await api.request('GET', '/schedules', { token: BILLING_ADMIN });
    expect(listed.body.data.map((schedule: { ref: string }) => schedule.ref)).toEqual(['invoices']);
  });
});

describe('an executor', () => {
  it('fires a schedule created through the API: one execution per tick, with its params and provenance', async () => {
    await api.t.pool.query('delete from usher.schedules');
    const created = await put('every-second', { action_ref: 'demo.report', cron: '* * * * * *', params: { from: 'api' } });
    expect(created.status).toBe(201);
    await startExecutor(api.t.url, { USHER_SWEEP_INTERVAL_MS: '200' });
    const fired = await waitFor(async () => {
      const { rows } = await api.t.pool.query(
        'select action_ref, params, schedule_tick from usher.executions where schedule_id = $1 order by schedule_tick', [created.body.data.id]);
      return rows.length >= 2 ? rows : undefined;
    }, { timeoutMs: 20_000 });
    expect(fired.slice(0, 2).map((execution) => [execution.action_ref, execution.params])).toEqual([
      ['demo.report', { from: 'api' }], ['demo.report', { from: 'api' }],
    ]);
    expect(fired[1].schedule_tick.getTime() - fired[0].schedule_tick.getTime()).toBe(1000);
    const read = await api.request('GET', '/schedules/every-second', { token: READ_TOKEN });
    expect(read.body.data.last_tick_at).not.toBeNull();
    expect(read.body.data.error).toBeNull();
  });
});
