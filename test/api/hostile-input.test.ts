/**
 * Every route, fed SQL-injection strings, huge numbers, wrong types, unicode and empty or broken
 * bodies in each of its inputs: each answer is a clean 4xx in the error envelope, and the database
 * is exactly as it was.
 */
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Route } from '../../src/api/route.ts';
import { allRoutes } from '../../src/api/routes/index.ts';
import { snapshot, startTestApi, type TestApi } from '../support/api.ts';

let api: TestApi;
let executionId: string;
const routes: Route[] = allRoutes(() => ({}));

const injections = ["' or '1'='1", "1; drop table usher.executions; --", "demo.a'); delete from usher.actions; --", '$1', '\\x00'];
const unicode = ['ünïcödé.✓', '雪.🚀', 'Ａ.ｂ', '\u202edemo.a'];
const numbers = ['99999999999999999999999', '9223372036854775808', '-1', '0', '1.5', '1e3', '0x10', 'NaN', 'Infinity'];
const textCandidates = [...injections, ...unicode, ...numbers, '', ' ', 'null', '[]', '{}', 'a'.repeat(5000)];
const valueCandidates: unknown[] = [
  ...injections, ...unicode, '', 1e308, -1, 2 ** 53 + 1, 99999999999999999999999, 1.5, -2147483649, 2147483648, true, null, [], {},
  { $gt: '' }, ['x'], 'x'.repeat(20_000),
];

const validPath = (route: Route) => route.path
  .replace('{id}', executionId)
  .replace('{ref}', route.path.startsWith('/policies') ? 'p1' : route.path.startsWith('/packs') ? 'demo' : 'demo.a');

const validBodies: Record<string, Record<string, unknown>> = {
  executeAction: { action_ref: 'demo.a', parameters: { n: 1 } },
  executeActions: { executions: [{ action_ref: 'demo.a', parameters: { n: 1 } }] },
  cancelExecution: {},
  putAction: { description: 'x' },
  pauseAction: { reason: 'x' },
  cancelWaitingExecutions: { reason: 'x' },
  createPolicy: { ref: 'p-new', enabled: true, priority: 0, scope: { type: 'global' } },
  putPolicy: { enabled: true, priority: 0, scope: { type: 'global' } },
  pauseLane: { lane_key: 'action:demo.a', until: '2030-01-01T00:00:00Z', reason: 'x' },
  resumeLane: { lane_key: 'action:demo.a' },
  unblockLane: { lane_key: 'action:demo.a' },
  putSchedule: { action_ref: 'demo.a', cron: '0 3 * * *' },
};

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('demo.a');
    insert into usher.policies (ref, action_ref, threshold) values ('p1', 'demo.a', 1);`);
  executionId = (await api.t.pool.query(`insert into usher.executions (action_ref) values ('demo.a') returning id`)).rows[0].id;
});
afterAll(() => api.close());

async function expectClean4xx(route: Route, path: string, options: Parameters<TestApi['request']>[2], what: string): Promise<void> {
  const res = await api.request(route.method.toUpperCase(), path, options);
  expect([what, res.status >= 400 && res.status < 500], JSON.stringify(res.body)).toEqual([what, true]);
  expect(JSON.stringify(res.body)).not.toMatch(/syntax error|violates|relation |pg_|DatabaseError|\n\s+at /);
}

describe('hostile input', () => {
  it('answers hostile path parameters with 400 on every route that has one', async () => {
    const before = await snapshot(api.t.pool);
    let sent = 0;
    for (const route of routes.filter((candidate) => candidate.params)) {
      for (const value of textCandidates) {
        const key = route.path.includes('{id}') ? 'id' : 'ref';
        if (route.params!.safeParse({ [key]: value }).success) continue;
        const path = route.path.replace(/\{(id|ref)\}/, encodeURIComponent(value) || '%20');
        await expectClean4xx(route, path, { body: validBodies[route.operationId] }, `${route.method} ${path}`);
        sent += 1;
      }
    }
    expect(sent).toBeGreaterThan(200);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('answers hostile query parameters with 400 on every route, including unknown parameters', async () => {
    const before = await snapshot(api.t.pool);
    let sent = 0;
    for (const route of routes) {
      const schema = (route.query ?? z.strictObject({})) as z.ZodObject;
      const fields = [...Object.keys(schema.shape), 'limit', "x' or 1=1"];
      for (const field of fields) {
        for (const value of textCandidates) {
          if (schema.safeParse({ [field]: value }).success) continue;
          const path = `${validPath(route)}?${new URLSearchParams({ [field]: value })}`;
          await expectClean4xx(route, path, { body: validBodies[route.operationId] }, `${route.method} ${path.slice(0, 120)}`);
          sent += 1;
        }
      }
    }
    expect(sent).toBeGreaterThan(500);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('answers hostile bodies with 4xx on every route that takes one: each field, and the body as a whole', async () => {
    const before = await snapshot(api.t.pool);
    const bodyRoutes = routes.filter((route) => route.body);
    expect(bodyRoutes.map((route) => route.operationId).sort()).toEqual(Object.keys(validBodies).sort());
    for (const route of bodyRoutes) {
      let sent = 0;
      const base = validBodies[route.operationId]!;
      const shape = ((route.body as z.ZodOptional<z.ZodObject>).unwrap?.() ?? route.body as z.ZodObject).shape as Record<string, unknown>;
      // A batch's items get every hostile field value an execute body gets, one bad item after a good one.
      const item = route.operationId === 'executeActions' ? validBodies.executeAction! : undefined;
      const fields = [...Object.keys(item ?? shape), 'status', 'lease_token', '__proto__'];
      for (const field of fields) {
        for (const value of valueCandidates) {
          const body = item ? { executions: [item, { ...item, [field]: value }] } : { ...base, [field]: value };
          if (route.body!.safeParse(JSON.parse(JSON.stringify(body))).success) continue;
          await expectClean4xx(route, validPath(route), { body }, `${route.operationId} ${field}=${JSON.stringify(value)?.slice(0, 40)}`);
          sent += 1;
        }
      }
      for (const raw of ['', '{}', '[]', 'null', '"text"', '1', '{"a":', '{"__proto__": {"polluted": true}}', '\u00ff\u00fe', '{"action_ref": "demo.a"}{}']) {
        // An empty body sent as JSON reads as {}.
        const parsed = (() => { try { return route.body!.safeParse(JSON.parse(raw === '' ? '{}' : raw)).success; } catch { return false; } })();
        if (parsed) continue;
        await expectClean4xx(route, validPath(route), { rawBody: raw, headers: { 'content-type': 'application/json' } }, `${route.operationId} raw ${raw}`);
        sent += 1;
      }
      expect([route.operationId, sent > 20]).toEqual([route.operationId, true]);
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('text that looks like SQL', () => {
  it('is stored and answered verbatim in free-text fields, and the tables are intact', async () => {
    const text = "'); drop table usher.executions; -- ünï ✓ 雪 🚀 \\ $1 %s";
    const put = await api.request('PUT', '/actions/demo.a', { body: { description: text } });
    expect(put.body.data.description).toBe(text);
    const created = await api.request('POST', '/executions/execute', {
      body: { action_ref: 'demo.a', parameters: { [text]: text, nested: { sql: text } }, idempotency_key: text },
    });
    expect(created.status).toBe(201);
    expect(created.body.data).toMatchObject({ params: { [text]: text, nested: { sql: text } }, idempotency_key: text });
    const cancelled = await api.request('POST', `/executions/${created.body.data.id}/cancel`, { body: { reason: text } });
    expect(cancelled.body.data.result).toEqual({ reason: text });
    const { rows } = await api.t.pool.query(`select description from usher.actions where ref = 'demo.a'`);
    expect(rows).toEqual([{ description: text }]);
    expect((await api.t.pool.query('select count(*)::int as n from usher.executions')).rows).toEqual([{ n: 2 }]);
  });
});
