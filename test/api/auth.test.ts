import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertSafeBinding, isLoopback } from '../../src/api/server.ts';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_TOKEN, READ_TOKEN, routeFor, snapshot, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api.ts';
import { waitFor } from '../support/wait.ts';
import { allRoutes } from '../../src/api/routes/index.ts';

let api: TestApi;
let executionId: string;

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('demo.a');
    insert into usher.policies (ref, action_ref, threshold) values ('p1', 'demo.a', 1);
    insert into usher.schedules (ref, action_ref, cron) values ('demo.a', 'demo.a', '0 3 * * *');`);
  executionId = (await api.t.pool.query(`insert into usher.executions (action_ref) values ('demo.a') returning id`)).rows[0].id;
});
afterAll(() => api.close());

/** Every route with its parameters filled with things that exist. */
function concreteRoutes() {
  return allRoutes(() => ({})).map((route) => ({
    route,
    path: route.path.replace('{id}', executionId).replace('{ref}', route.path.startsWith('/policies') ? 'p1' : route.path.startsWith('/packs') ? 'demo' : 'demo.a'),
  }));
}

describe('bearer tokens', () => {
  it('refuses every non-public route with 401 without a token, with a malformed header or with an unknown token', async () => {
    const before = await snapshot(api.t.pool);
    const attempts: [string | null, Record<string, string>, string][] = [
      [null, {}, 'missing bearer token: send Authorization: Bearer <token>'],
      [null, { authorization: 'Basic dXNlcjpwYXNz' }, 'malformed Authorization header: expected Bearer <token>'],
      [null, { authorization: 'Bearer' }, 'malformed Authorization header: expected Bearer <token>'],
      [null, { authorization: `Bearer ${READ_TOKEN} extra` }, 'malformed Authorization header: expected Bearer <token>'],
      [null, { authorization: `Bearer ${READ_TOKEN}'; drop table usher.executions; --` }, 'malformed Authorization header: expected Bearer <token>'],
      ['wrong-token-0123456789abcdef', {}, 'invalid bearer token'],
      [`${READ_TOKEN}x`, {}, 'invalid bearer token'],
      [READ_TOKEN.slice(0, -1), {}, 'invalid bearer token'],
    ];
    for (const { route, path } of concreteRoutes().filter(({ route }) => route.access !== 'public')) {
      for (const [token, headers, message] of attempts) {
        const res = await api.request(route.method.toUpperCase(), path, { token, headers, body: route.body ? {} : undefined });
        expect([route.method, path, res.status, res.body.error.code, res.body.error.message]).toEqual([route.method, path, 401, 'unauthorized', message]);
        expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="usher"/);
      }
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('refuses a read token on every write and admin route with 403, before reading the body, changing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const writes = concreteRoutes().filter(({ route }) => route.access === 'write' || route.access === 'admin');
    expect(writes.length).toBe(17);
    for (const { route, path } of writes) {
      const res = await api.request(route.method.toUpperCase(), path, { token: READ_TOKEN, rawBody: route.body ? '{not json' : undefined, headers: { 'content-type': 'application/json' } });
      expect([path, res.status, res.body.error.code]).toEqual([path, 403, 'forbidden']);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="usher", error="insufficient_scope"');
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('refuses a write token on every admin route with 403 naming the admin role, before reading the body, changing and auditing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const admins = concreteRoutes().filter(({ route }) => route.access === 'admin');
    expect(admins.map(({ route }) => route.operationId).sort()).toEqual([
      'cancelWaitingExecutions', 'createPolicy', 'deleteAction', 'deletePolicy', 'deleteSchedule', 'pauseAction', 'pauseLane', 'putAction',
      'putPolicy', 'putSchedule', 'resumeAction', 'resumeLane', 'unblockLane',
    ]);
    for (const { route, path } of admins) {
      const res = await api.request(route.method.toUpperCase(), path, { token: WRITE_TOKEN, rawBody: route.body ? '{not json' : undefined, headers: { 'content-type': 'application/json' } });
      expect([path, res.status, res.body.error.code, res.body.error.message]).toEqual([path, 403, 'forbidden',
        'this route changes how the queue runs (actions, policies, lanes, schedules) and needs an admin token']);
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="usher", error="insufficient_scope"');
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
    expect((await api.t.pool.query('select count(*)::int as n from usher.api_audit_log')).rows).toEqual([{ n: 0 }]);
  });

  it('lets read, write and admin tokens call every read route, and needs no token for health, ready and the document', async () => {
    for (const { route, path } of concreteRoutes().filter(({ route }) => route.method === 'get')) {
      const tokens = route.access === 'public' ? [null, READ_TOKEN] : [READ_TOKEN, WRITE_TOKEN, ADMIN_TOKEN];
      for (const token of tokens) {
        const res = await api.request('GET', path, { token });
        expect([path, token === null ? 'none' : token.slice(0, 4), res.status]).toEqual([path, token === null ? 'none' : token.slice(0, 4), 200]);
      }
    }
  });

  it('lets a write token enqueue and cancel, and an admin token run admin operations, each recorded in usher.api_audit_log', async () => {
    const enqueued = await api.request('POST', '/executions/execute', { token: WRITE_TOKEN, body: { action_ref: 'demo.a', parameters: {} } });
    expect(enqueued.status).toBe(201);
    expect((await api.request('POST', `/executions/${enqueued.body.data.id}/cancel`, { token: WRITE_TOKEN, body: {} })).status).toBe(200);
    expect((await api.t.pool.query('select count(*)::int as n from usher.api_audit_log')).rows).toEqual([{ n: 0 }]);

    const paused = await api.request('POST', '/actions/demo.a/pause', { token: ADMIN_TOKEN, body: { reason: 'maintenance' }, headers: { 'x-request-id': 'audit-pause-1' } });
    expect(paused.status).toBe(200);
    const missing = await api.request('POST', '/lanes/unblock', { token: ADMIN_TOKEN, body: { lane_key: 'action:demo.none' } });
    expect(missing.status).toBe(404);
    const resumed = await api.request('POST', '/actions/demo.a/resume', { token: ADMIN_TOKEN });
    expect(resumed.status).toBe(200);
    const fingerprint = createHash('sha256').update(ADMIN_TOKEN).digest('hex').slice(0, 12);
    const audited = async () => (await api.t.pool.query(
      `select actor, operation, method, path, target, request, request_id, status, answered_at >= requested_at as ordered
       from usher.api_audit_log order by id`)).rows;
    expect(await waitFor(async () => { const rows = await audited(); return rows.every((row) => row.status !== null) && rows; })).toEqual([
      { actor: `token:${fingerprint}`, operation: 'pauseAction', method: 'POST', path: '/api/v1/actions/demo.a/pause', target: 'demo.a',
        request: { params: { ref: 'demo.a' }, body: { reason: 'maintenance' } }, request_id: 'audit-pause-1', status: 200, ordered: true },
      { actor: `token:${fingerprint}`, operation: 'unblockLane', method: 'POST', path: '/api/v1/lanes/unblock', target: 'action:demo.none',
        request: { params: {}, body: { lane_key: 'action:demo.none' } }, request_id: missing.headers.get('x-request-id'), status: 404, ordered: true },
      { actor: `token:${fingerprint}`, operation: 'resumeAction', method: 'POST', path: '/api/v1/actions/demo.a/resume', target: 'demo.a',
        request: { params: { ref: 'demo.a' }, body: {} }, request_id: resumed.headers.get('x-request-id'), status: 200, ordered: true },
    ]);
    await api.t.pool.query('delete from usher.api_audit_log');
  });

  it('does not run an admin operation it cannot audit', async () => {
    await api.t.pool.query(`
      create function public.refuse_audit() returns trigger language plpgsql as $$ begin raise exception 'audit log unavailable'; end $$;
      create trigger refuse_audit before insert on usher.api_audit_log for each row execute function public.refuse_audit();`);
    try {
      const res = await api.request('POST', '/actions/demo.a/pause', { token: ADMIN_TOKEN, body: {} });
      expect([res.status, res.body.error.code]).toEqual([500, 'internal_error']);
      expect((await api.t.pool.query(`select paused_at from usher.actions where ref = 'demo.a'`)).rows).toEqual([{ paused_at: null }]);
    } finally {
      await api.t.pool.query('drop trigger refuse_audit on usher.api_audit_log; drop function public.refuse_audit()');
    }
  });

  it('runs open with no tokens configured: every route, no header needed', async () => {
    const open = await startTestApi({ database: api.t, apiTokens: [] });
    try {
      expect((await open.request('POST', '/actions/demo.a/resume', { token: null })).status).toBe(200);
      const { rows } = await api.t.pool.query(`select actor, operation, status from usher.api_audit_log where operation = 'resumeAction'`);
      expect(await waitFor(async () => {
        const { rows: answered } = await api.t.pool.query(`select actor, operation, status from usher.api_audit_log where status is not null`);
        return answered.length === rows.length && answered;
      })).toEqual([{ actor: 'open', operation: 'resumeAction', status: 200 }]);
      expect((await open.request('GET', '/executions', { token: null })).status).toBe(200);
      expect(open.logs.find((line) => line.event === 'api:open')).toMatchObject({ level: 'warn', url: open.server.url });
    } finally {
      await open.close();
    }
  });

  it('warns at start when no token may run the admin routes of every pack, and not when one may', async () => {
    expect(api.logs.filter((line) => line.event === 'api:no_admin_token')).toEqual([]);
    for (const apiTokens of [[{ role: 'write' as const, token: WRITE_TOKEN }], [{ role: 'admin' as const, token: ADMIN_TOKEN, packs: ['demo'] }]]) {
      const limited = await startTestApi({ database: api.t, apiTokens });
      try {
        expect(limited.logs.filter((line) => line.event === 'api:no_admin_token').map((line) => line.level)).toEqual(['warn']);
      } finally {
        await limited.close();
      }
    }
  });

  it('matches the route the test helper checks responses against', () => {
    expect(routeFor('GET', '/api/v1/executions/stats')?.operationId).toBe('executionStats');
    expect(routeFor('GET', '/api/v1/executions/12')?.operationId).toBe('getExecution');
  });
});

describe('USHER_API_TOKENS and the listening address', () => {
  it('parses role:token pairs and refuses bad ones without echoing a token', () => {
    expect(loadConfig({ USHER_API_TOKENS: ` read:${READ_TOKEN} , write:${WRITE_TOKEN},admin:${ADMIN_TOKEN}` }).apiTokens)
      .toEqual([{ role: 'read', token: READ_TOKEN }, { role: 'write', token: WRITE_TOKEN }, { role: 'admin', token: ADMIN_TOKEN }]);
    expect(loadConfig({}).apiTokens).toEqual([]);
    const problems: [string, string][] = [
      [`owner:${READ_TOKEN}`, 'entry 1 must be read:<token>, write:<token> or admin:<token>'],
      ['read:short', 'entry 1 (read): a token is 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = -'],
      [`read:${READ_TOKEN},write:${READ_TOKEN}`, 'entry 2 (write): the same token is listed twice'],
      [READ_TOKEN, 'entry 1 must be read:<token>, write:<token> or admin:<token>'],
    ];
    for (const [value, message] of problems) {
      expect(() => loadConfig({ USHER_API_TOKENS: value })).toThrow(`invalid configuration: USHER_API_TOKENS: ${message}`);
      try {
        loadConfig({ USHER_API_TOKENS: value });
      } catch (error) {
        expect((error as Error).message).not.toContain(READ_TOKEN);
      }
    }
    expect(loadConfig({ USHER_API_PORT: '0', USHER_API_HOST: '::1' })).toMatchObject({ apiPort: 0, apiHost: '::1' });
    expect(() => loadConfig({ USHER_API_PORT: '70000' })).toThrow(/USHER_API_PORT/);
  });

  it('refuses an open API on anything but a loopback address', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
      expect([host, isLoopback(host)]).toEqual([host, true]);
      expect(() => assertSafeBinding(host, 0)).not.toThrow();
    }
    for (const host of ['0.0.0.0', '::', '10.0.0.5', '192.168.1.1', 'example.com', '128.0.0.1', '::2']) {
      expect([host, isLoopback(host)]).toEqual([host, false]);
      expect(() => assertSafeBinding(host, 0)).toThrow(`USHER_API_HOST ${host} is not a loopback address and USHER_API_TOKENS is empty`);
      expect(() => assertSafeBinding(host, 1)).not.toThrow();
    }
  });
});
