import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { READ_TOKEN, snapshot, startTestApi, type TestApi } from '../support/api.ts';

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`insert into usher.actions (ref) values ('ops.restart'), ('ops.ping'), ('web.fetch')`);
});
afterAll(() => api.close());

async function columns(ref: string) {
  const { rows } = await api.t.pool.query(
    `select action_ref, pack_ref, enabled, priority, threshold, method, parameters, max_queue_length, rate_limit_max_executions,
       rate_limit_window_seconds, quotas, queue_timeout_seconds, on_failure, description
     from usher.policies where ref = $1`, [ref]);
  return rows[0];
}

const full = {
  ref: 'one-per-host', description: 'restarts one host at a time', enabled: true, priority: 5,
  scope: { type: 'action', action_ref: 'ops.restart' },
  concurrency: { limit: 1, method: 'enqueue', parameters: ['host'] },
  rate_limit: { max_executions: 50, window_seconds: 60 },
  quotas: [{ quota_type: 'running_executions', limit: 10 }],
  on_failure: 'block', max_queue_length: 500, queue_timeout_seconds: 3600,
};

describe('policies', () => {
  it('creates a policy (201), mapping each field to its column, and shows it in the same shape', async () => {
    const res = await api.request('POST', '/policies', { body: full });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      data: { ...full, id: expect.stringMatching(/^[0-9]+$/), created_at: expect.any(String), updated_at: expect.any(String) },
      message: 'policy created',
    });
    expect(await columns('one-per-host')).toEqual({
      action_ref: 'ops.restart', pack_ref: null, enabled: true, priority: 5, threshold: 1, method: 'enqueue', parameters: ['host'],
      max_queue_length: 500, rate_limit_max_executions: 50, rate_limit_window_seconds: 60,
      quotas: [{ quota_type: 'running_executions', limit: 10 }], queue_timeout_seconds: 3600, on_failure: 'block',
      description: 'restarts one host at a time',
    });
    expect((await api.request('GET', '/policies/one-per-host', { token: READ_TOKEN })).body).toEqual({ data: res.body.data });
  });

  it('fills the defaults of a minimal policy', async () => {
    const res = await api.request('POST', '/policies', { body: { ref: 'ops-wide', enabled: true, priority: 0, scope: { type: 'pack', pack_ref: 'ops' } } });
    expect(res.body.data).toEqual({
      id: expect.any(String), ref: 'ops-wide', description: null, enabled: true, priority: 0, scope: { type: 'pack', pack_ref: 'ops' },
      concurrency: { limit: null, method: 'enqueue', parameters: [] }, rate_limit: null, quotas: [], on_failure: 'wait',
      max_queue_length: 10000, queue_timeout_seconds: null, created_at: expect.any(String), updated_at: expect.any(String),
    });
  });

  it('refuses a second policy of the same ref (409) and one naming an unknown action (404), storing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const dup = await api.request('POST', '/policies', { body: full });
    expect(dup.body.error).toEqual({ code: 'policy_exists', message: 'a policy named one-per-host exists; PUT /policies/one-per-host replaces it', request_id: expect.any(String) });
    expect(dup.status).toBe(409);
    const unknown = await api.request('POST', '/policies', { body: { ...full, ref: 'other', scope: { type: 'action', action_ref: 'ops.nope' } } });
    expect([unknown.status, unknown.body.error.code, unknown.body.error.message]).toEqual([404, 'unknown_action', 'unknown action ops.nope']);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('names the bad fields of a policy, nested ones by their path', async () => {
    const res = await api.request('POST', '/policies', {
      body: {
        ref: 'Bad Ref', enabled: 'true', priority: 1, scope: { type: 'pack' },
        concurrency: { limit: -1, method: 'drop' }, rate_limit: { max_executions: 5 },
        quotas: [{ quota_type: 'running_executions', limit: 1 }, { quota_type: 'running_executions', limit: 2 }],
      },
    });
    expect(res.status).toBe(400);
    expect(res.body.error.details.map((detail: { field: string }) => detail.field)).toEqual([
      'ref', 'enabled', 'scope.pack_ref', 'concurrency.limit', 'concurrency.method', 'rate_limit.window_seconds', 'quotas',
    ]);
    expect(res.body.error.details.at(-1)).toEqual({ location: 'body', field: 'quotas', message: 'names a quota type twice' });
  });

  it('replaces a whole policy with PUT (200), keeping id and created_at; creates one that is missing (201)', async () => {
    const before = (await api.request('GET', '/policies/one-per-host')).body.data;
    const res = await api.request('PUT', '/policies/one-per-host', {
      body: { enabled: false, priority: 1, scope: { type: 'global' }, concurrency: { limit: 3 } },
    });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      data: {
        id: before.id, ref: 'one-per-host', description: null, enabled: false, priority: 1, scope: { type: 'global' },
        concurrency: { limit: 3, method: 'enqueue', parameters: [] }, rate_limit: null, quotas: [], on_failure: 'wait',
        max_queue_length: 10000, queue_timeout_seconds: null, created_at: before.created_at, updated_at: expect.any(String),
      },
      message: 'policy replaced',
    });
    const created = await api.request('PUT', '/policies/web-limit', { body: { ref: 'web-limit', enabled: true, priority: 0, scope: { type: 'action', action_ref: 'web.fetch' } } });
    expect([created.status, created.body.message, created.body.data.scope]).toEqual([201, 'policy created', { type: 'action', action_ref: 'web.fetch' }]);
    const mismatch = await api.request('PUT', '/policies/web-limit', { body: { ref: 'other', enabled: true, priority: 0, scope: { type: 'global' } } });
    expect([mismatch.status, mismatch.body.error.details]).toEqual([400, [{ location: 'body', field: 'ref', message: 'must equal the ref in the path' }]]);
  });

  it('lists policies by ref, or only enabled ones', async () => {
    const all = await api.request('GET', '/policies', { token: READ_TOKEN });
    expect(all.body.data.map((policy: { ref: string }) => policy.ref)).toEqual(['one-per-host', 'ops-wide', 'web-limit']);
    expect(all.body.pagination).toEqual({ page: 1, page_size: 50, total_items: 3, total_pages: 1 });
    const enabled = await api.request('GET', '/policies?enabled=true', { token: READ_TOKEN });
    expect(enabled.body.data.map((policy: { ref: string }) => policy.ref)).toEqual(['ops-wide', 'web-limit']);
  });

  it('lists the policies that can govern an action in precedence order, and those of a pack', async () => {
    await api.request('POST', '/policies', { body: { ref: 'ping-own', enabled: true, priority: 0, scope: { type: 'action', action_ref: 'ops.ping' } } });
    const ofAction = await api.request('GET', '/actions/ops.ping/policies', { token: READ_TOKEN });
    expect(ofAction.body.data.map((policy: { ref: string }) => policy.ref)).toEqual(['ping-own', 'ops-wide', 'one-per-host']);
    expect((await api.request('GET', '/actions/ops.nope/policies')).status).toBe(404);
    const ofPack = await api.request('GET', '/packs/ops/policies', { token: READ_TOKEN });
    expect(ofPack.body.data.map((policy: { ref: string }) => policy.ref)).toEqual(['ops-wide', 'ping-own']);
    expect((await api.request('GET', '/packs/nothing/policies')).body).toEqual({ data: [], pagination: { page: 1, page_size: 50, total_items: 0, total_pages: 0 } });
  });

  it('deletes a policy and answers it; 404 for one that does not exist', async () => {
    const existing = (await api.request('GET', '/policies/ops-wide')).body.data;
    const res = await api.request('DELETE', '/policies/ops-wide');
    expect(res.body).toEqual({ data: existing, message: 'policy deleted' });
    expect((await api.t.pool.query(`select count(*)::int as n from usher.policies where ref = 'ops-wide'`)).rows).toEqual([{ n: 0 }]);
    const missing = await api.request('DELETE', '/policies/ops-wide');
    expect([missing.status, missing.body.error.code, missing.body.error.message]).toEqual([404, 'policy_not_found', 'no policy named ops-wide']);
  });
});
