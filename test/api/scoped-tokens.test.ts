/**
 * RELIABILITY T29: tokens limited to packs. A token of pack `billing` used on pack `ops` (enqueue,
 * read, cancel, retry, pause, unblock, policies) changes nothing, learns nothing about what exists
 * outside its packs, and sees only its packs in lists, counts and the event stream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRoutes } from '../../src/api/routes/index.ts';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_TOKEN, snapshot, startTestApi, tokens, type TestApi } from '../support/api.ts';
import { openEventStream } from '../support/sse.ts';
import { waitFor } from '../support/wait.ts';

const BILLING_READ = 'billing-read-0123456789abcdef';
const BILLING_WRITE = 'billing-write-0123456789abcdef';
const BILLING_ADMIN = 'billing-admin-0123456789abcdef';
const outside = (what: string) => `this token is limited to the packs billing; ${what} is outside them`;

let api: TestApi;
let billingId: string;
let opsId: string;
let failedOpsId: string;

beforeAll(async () => {
  api = await startTestApi({
    apiTokens: [
      ...tokens,
      { role: 'read', token: BILLING_READ, packs: ['billing'] },
      { role: 'write', token: BILLING_WRITE, packs: ['billing'] },
      { role: 'admin', token: BILLING_ADMIN, packs: ['billing'] },
    ],
  });
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('billing.charge'), ('billing.refund'), ('ops.restart');
    insert into usher.policies (ref, action_ref, pack_ref, threshold) values
      ('pol-billing', 'billing.charge', null, 1), ('pol-ops', 'ops.restart', null, 1),
      ('pol-billing-pack', null, 'billing', 5), ('pol-global', null, null, 10);`);
  const { rows } = await api.t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref) values ('billing.charge'), ('ops.restart'), ('ops.restart') returning id`);
  [billingId, opsId, failedOpsId] = rows.map((row) => row.id) as [string, string, string];
  await api.t.pool.query(`update usher.executions set status = 'failed', error = 'x', completed_at = now(), queue_position = queue_position where id = $1`, [failedOpsId]);
});
afterAll(() => api.close());

const policy = { enabled: true, priority: 0, concurrency: { limit: 1 } };
const auditRows = async () => (await api.t.pool.query<{ n: number }>('select count(*)::int as n from usher.api_audit_log')).rows[0]!.n;

describe('a token limited to pack billing', () => {
  it('enqueues into its packs only: any action outside them is refused alike, existing or not, with nothing inserted', async () => {
    const ok = await api.request('POST', '/executions/execute', { token: BILLING_WRITE, body: { action_ref: 'billing.refund', parameters: {} } });
    expect([ok.status, ok.body.data.action_ref]).toEqual([201, 'billing.refund']);
    const before = await snapshot(api.t.pool);
    for (const ref of ['ops.restart', 'ops.nothing', 'nowhere.at_all']) {
      const refused = await api.request('POST', '/executions/execute', { token: BILLING_WRITE, body: { action_ref: ref, parameters: {} } });
      expect([refused.status, refused.body.error.code, refused.body.error.message]).toEqual([403, 'forbidden', outside(`action ${ref}`)]);
      expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="usher", error="insufficient_scope"');
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('enqueues a batch only when every item is of its packs: one item outside refuses the whole batch, with nothing inserted', async () => {
    const inside = await api.request('POST', '/executions/execute-batch', {
      token: BILLING_WRITE, body: { executions: [{ action_ref: 'billing.refund', parameters: {} }, { action_ref: 'billing.charge', parameters: {} }] },
    });
    expect([inside.status, inside.body.data.map((entry: { execution: { action_ref: string } }) => entry.execution.action_ref)])
      .toEqual([201, ['billing.refund', 'billing.charge']]);
    const before = await snapshot(api.t.pool);
    const mixed = await api.request('POST', '/executions/execute-batch', {
      token: BILLING_WRITE,
      body: { executions: [{ action_ref: 'billing.refund', parameters: {} }, { action_ref: 'ops.restart', parameters: {} }, { action_ref: 'ops.nothing', parameters: {} }] },
    });
    expect([mixed.status, mixed.body.error.code, mixed.body.error.message]).toEqual([403, 'forbidden', outside('action ops.restart')]);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('reads, cancels and retries executions of its packs; one outside them answers exactly as one that does not exist, unchanged', async () => {
    expect((await api.request('GET', `/executions/${billingId}`, { token: BILLING_READ })).status).toBe(200);
    const before = await snapshot(api.t.pool);
    const missing = '999999999';
    for (const [method, path, token] of [
      ['GET', '', BILLING_READ], ['POST', '/cancel', BILLING_WRITE], ['POST', '/retry', BILLING_WRITE],
    ] as const) {
      const body = path === '/cancel' ? {} : undefined;
      const hidden = await api.request(method, `/executions/${path === '/retry' ? failedOpsId : opsId}${path}`, { token, body });
      const absent = await api.request(method, `/executions/${missing}${path}`, { token, body });
      expect([hidden.status, hidden.body.error.code, hidden.body.error.message.replace(/\d+$/, 'N')])
        .toEqual([absent.status, absent.body.error.code, absent.body.error.message.replace(/\d+$/, 'N')]);
      expect(hidden.status).toBe(404);
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('lists, counts and names only its packs, and is refused the routes about the whole queue', async () => {
    const listed = await api.request('GET', '/executions', { token: BILLING_READ });
    expect(listed.body.data.map((row: { action_ref: string }) => row.action_ref).sort())
      .toEqual(['billing.charge', 'billing.charge', 'billing.refund', 'billing.refund']);
    expect((await api.request('GET', '/executions?action_ref=ops.*', { token: BILLING_READ })).body.data).toEqual([]);
    const stats = await api.request('GET', '/executions/stats', { token: BILLING_READ });
    expect(stats.body.data).toMatchObject({ total: 4, failed: 0 });
    const everything = await api.request('GET', '/executions/stats', { token: ADMIN_TOKEN });
    expect(everything.body.data).toMatchObject({ total: 6, failed: 1 });
    const actions = await api.request('GET', '/actions', { token: BILLING_READ });
    expect(actions.body.data.map((row: { ref: string }) => row.ref)).toEqual(['billing.charge', 'billing.refund']);

    for (const [path, what] of [
      ['/actions/ops.restart', 'action ops.restart'], ['/actions/ops.nothing', 'action ops.nothing'],
      ['/actions/ops.restart/queue-stats', 'action ops.restart'], ['/actions/ops.restart/lanes', 'action ops.restart'],
      ['/actions/ops.restart/policies', 'action ops.restart'], ['/packs/ops/policies', 'pack ops'],
      ['/workers', 'this route reads the whole queue, which'], ['/metrics', 'this route reads the whole queue, which'],
      ['/queue-stats', 'this route reads the whole queue, which'], ['/policies', 'this route reads the whole queue, which'],
    ]) {
      const res = await api.request('GET', path!, { token: BILLING_READ });
      expect([path, res.status, res.body.error?.message]).toEqual([path, 403, outside(what!)]);
    }
    for (const path of ['/actions/billing.charge', '/actions/billing.charge/queue-stats', '/packs/billing/policies', '/actions/billing.charge/policies']) {
      expect([path, (await api.request('GET', path, { token: BILLING_READ })).status]).toEqual([path, 200]);
    }
  });

  it('runs admin operations on its packs only: outside them 403 with no audit row and nothing changed; policies outside are not found', async () => {
    const before = await snapshot(api.t.pool);
    const audited = await auditRows();
    const refusals: [string, string, unknown, string][] = [
      ['POST', '/actions/ops.restart/pause', {}, 'action ops.restart'],
      ['PUT', '/actions/ops.new', {}, 'action ops.new'],
      ['DELETE', '/actions/ops.restart', undefined, 'action ops.restart'],
      ['POST', '/lanes/unblock', { lane_key: 'action:ops.restart' }, 'lane action:ops.restart'],
      ['POST', '/lanes/pause', { lane_key: 'global', until: '2099-01-01T00:00:00Z' }, 'lane global'],
      ['POST', '/policies', { ...policy, ref: 'pol-new', scope: { type: 'action', action_ref: 'ops.restart' } }, 'policy pol-new (scope ops.restart)'],
      ['POST', '/policies', { ...policy, ref: 'pol-new', scope: { type: 'global' } }, 'policy pol-new (scope global)'],
      ['PUT', '/policies/pol-new', { ...policy, scope: { type: 'pack', pack_ref: 'ops' } }, 'policy pol-new (scope ops)'],
    ];
    for (const [method, path, body, what] of refusals) {
      const res = await api.request(method, path, { token: BILLING_ADMIN, body });
      expect([method, path, res.status, res.body.error.message]).toEqual([method, path, 403, outside(what)]);
    }
    for (const [method, path, body] of [
      ['GET', '/policies/pol-ops', undefined], ['GET', '/policies/pol-global', undefined], ['DELETE', '/policies/pol-ops', undefined],
      ['PUT', '/policies/pol-ops', { ...policy, scope: { type: 'action', action_ref: 'billing.charge' } }],
    ] as const) {
      const res = await api.request(method, path, { token: BILLING_ADMIN, body });
      expect([method, path, res.status, res.body.error.code]).toEqual([method, path, 404, 'policy_not_found']);
    }
    expect(await snapshot(api.t.pool)).toEqual(before);

    const paused = await api.request('POST', '/actions/billing.charge/pause', { token: BILLING_ADMIN, body: {} });
    expect(paused.status).toBe(200);
    const created = await api.request('POST', '/policies', { token: BILLING_ADMIN, body: { ...policy, ref: 'pol-refund', scope: { type: 'action', action_ref: 'billing.refund' } } });
    expect(created.status).toBe(201);
    expect((await api.request('GET', '/policies/pol-billing-pack', { token: BILLING_READ })).status).toBe(200);
    // Audited: the two admin requests that passed the scope check and were then not found (DELETE and PUT of pol-ops), and the two that ran.
    const answered = () => waitFor(async () => {
      const { rows } = await api.t.pool.query(`select operation, target, status from usher.api_audit_log order by id offset $1`, [audited]);
      return rows.every((row) => row.status !== null) && rows;
    }, { what: 'the audited requests answered' });
    expect(await answered()).toEqual([
      { operation: 'deletePolicy', target: 'pol-ops', status: 404 }, { operation: 'putPolicy', target: 'pol-ops', status: 404 },
      { operation: 'pauseAction', target: 'billing.charge', status: 200 }, { operation: 'createPolicy', target: 'pol-refund', status: 201 },
    ]);
  });

  it('streams only the events of its packs', async () => {
    const stream = await openEventStream(`${api.base}/executions/stream`, { authorization: `Bearer ${BILLING_READ}` });
    const everything = await openEventStream(`${api.base}/executions/stream`, { authorization: `Bearer ${ADMIN_TOKEN}` });
    const { rows } = await api.t.pool.query<{ id: string; action_ref: string }>(
      `insert into usher.executions (action_ref) values ('ops.restart'), ('billing.refund'), ('ops.restart'), ('billing.charge') returning id, action_ref`);
    const ofEvents = (events: { event: string; data: string }[]) => events.filter((event) => event.event === 'execution')
      .map((event) => JSON.parse(event.data) as { execution_id: string; action_ref: string });
    await waitFor(() => ofEvents(everything.events).length >= 4, { what: 'the four inserts on the unlimited stream' });
    await waitFor(() => ofEvents(stream.events).length >= 2, { what: 'the billing inserts on the limited stream' });
    stream.close();
    everything.close();
    expect(ofEvents(stream.events).map((event) => [event.execution_id, event.action_ref]))
      .toEqual(rows.filter((row) => row.action_ref.startsWith('billing.')).map((row) => [row.id, row.action_ref]));
  });
});

it('reads pack limits from USHER_API_TOKENS and refuses malformed ones', () => {
  expect(loadConfig({ USHER_API_TOKENS: `write@billing+ops+billing:${BILLING_WRITE},read:${BILLING_READ}` }).apiTokens)
    .toEqual([{ role: 'write', token: BILLING_WRITE, packs: ['billing', 'ops'] }, { role: 'read', token: BILLING_READ }]);
  for (const head of ['write@', 'write@Billing', 'write@billing+', 'write@a@b', 'write@bill ing']) {
    expect(() => loadConfig({ USHER_API_TOKENS: `${head}:${BILLING_WRITE}` }), head)
      .toThrow('invalid configuration: USHER_API_TOKENS: entry 1 (write): after @ come pack names joined by +, each a lower-case letter then a-z 0-9 _ -');
  }
});

it('leaves no route undecided: each declares what it is about, or is one of those that filter or check what they read', () => {
  const undeclared = allRoutes(() => ({})).filter((route) => route.access !== 'public' && route.scope === undefined)
    .map((route) => route.operationId).sort();
  expect(undeclared).toEqual([
    'cancelExecution', 'deletePolicy', 'deleteSchedule', 'executionStats', 'getExecution', 'getPolicy', 'getSchedule', 'listActions',
    'listExecutions', 'listSchedules', 'retryExecution', 'streamExecutionEvents',
  ]);
});
