/**
 * Property-based fuzzing of every route (fast-check, fixed seed): random paths, query strings,
 * bodies and Authorization headers, mixed with valid ones so requests reach deep into handlers.
 * Every answer must be below 500, in the documented envelope (the request helper checks the
 * schema of every response), free of database messages and stack traces, and a rejected request
 * must leave every table as it was. USHER_FUZZ_RUNS and USHER_FUZZ_SEED change the number of requests and the seed.
 */
import fc from 'fast-check';
import { z } from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Route } from '../../src/api/route.ts';
import { allRoutes } from '../../src/api/routes/index.ts';
import { ADMIN_TOKEN, READ_TOKEN, snapshot, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api.ts';

let api: TestApi;
let executionId: string;
const routes: Route[] = allRoutes(() => ({}));
const runs = Number(process.env.USHER_FUZZ_RUNS ?? 300);
const seed = Number(process.env.USHER_FUZZ_SEED ?? 20261128);

const injections = ["' or '1'='1", '1; drop table usher.executions; --', "demo.a'); delete from usher.actions; --", '%00', '${jndi:x}'];
const validBodies: Record<string, unknown> = {
  executeAction: { action_ref: 'demo.a', parameters: { n: 1 } },
  executeActions: { executions: [{ action_ref: 'demo.a', parameters: { n: 1 } }] },
  cancelExecution: { reason: 'fuzz' },
  putAction: { description: 'x', timeout_seconds: 30 },
  pauseAction: { reason: 'x' },
  cancelWaitingExecutions: { reason: 'fuzz' },
  createPolicy: { ref: 'p-fuzz', enabled: true, priority: 0, scope: { type: 'action', action_ref: 'demo.a' }, concurrency: { limit: 2, method: 'enqueue', parameters: [] } },
  putPolicy: { enabled: true, priority: 0, scope: { type: 'global' } },
  pauseLane: { lane_key: 'action:demo.a', until: '2030-01-01T00:00:00Z', reason: 'x' },
  resumeLane: { lane_key: 'action:demo.a' },
  unblockLane: { lane_key: 'action:demo.a' },
  putSchedule: { action_ref: 'demo.a', cron: '0 3 * * *', timezone: 'Europe/Paris', params: { n: 1 } },
};

const text = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(...injections),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.constantFrom('demo.a', 'demo.*', 'p1', 'demo', '1', '0', 'completed', 'requested,running', '2030-01-01T00:00:00Z'),
);

function pathFor(route: Route, segment: string | undefined): string {
  const valid = route.path.includes('{id}') ? executionId : route.path.startsWith('/policies') ? 'p1' : route.path.startsWith('/packs') ? 'demo' : 'demo.a';
  return route.path.replace(/\{(id|ref)\}/, encodeURIComponent(segment ?? valid) || '%20');
}

const queryFor = (route: Route) => {
  const known = Object.keys(((route.query ?? z.strictObject({})) as z.ZodObject).shape);
  const key = known.length > 0 ? fc.oneof(fc.constantFrom(...known), fc.string({ maxLength: 12 })) : fc.string({ maxLength: 12 });
  return fc.dictionary(key, text, { maxKeys: 3 });
};

/** An object with one of its fields (or an unknown one) replaced by anything JSON. */
const oneFieldReplaced = (valid: object) => fc.tuple(fc.constantFrom(...Object.keys(valid), 'extra'), fc.jsonValue({ maxDepth: 3 }))
  .map(([field, value]) => ({ ...valid, [field]: value }));

/** The valid body, one of its fields replaced (for a batch, also a field of its second item), or anything JSON at all. */
const bodyFor = (route: Route) => {
  const valid = validBodies[route.operationId];
  const item = validBodies.executeAction as object;
  const mutated = route.operationId === 'executeActions'
    ? fc.oneof(oneFieldReplaced(valid as object), oneFieldReplaced(item).map((bad) => ({ executions: [item, bad] })))
    : valid && typeof valid === 'object' ? oneFieldReplaced(valid) : fc.jsonValue({ maxDepth: 3 });
  return route.body ? fc.oneof(fc.constant(valid), mutated, fc.jsonValue({ maxDepth: 4 })) : fc.constant(undefined);
};

const authorization = fc.oneof(
  { weight: 5, arbitrary: fc.constant<string | null>(`Bearer ${ADMIN_TOKEN}`) },
  fc.constant<string | null>(`Bearer ${WRITE_TOKEN}`),
  fc.constant<string | null>(`Bearer ${READ_TOKEN}`),
  fc.constant<string | null>(null),
  fc.constantFrom<string | null>('Bearer', 'Basic d3JpdGU6eA==', `bearer  ${WRITE_TOKEN}`, `Bearer ${WRITE_TOKEN}x`, `Bearer ${WRITE_TOKEN.slice(0, -1)}`),
  fc.string({ maxLength: 30 }).map((value) => `Bearer ${value}`),
);

const request = fc.constantFrom(...routes).chain((route) => fc.record({
  route: fc.constant(route),
  segment: route.params ? fc.option(text, { nil: undefined }) : fc.constant(undefined),
  query: queryFor(route),
  body: bodyFor(route),
  authorization,
}));

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('demo.a');
    insert into usher.policies (ref, action_ref, threshold) values ('p1', 'demo.a', 1);`);
  executionId = (await api.t.pool.query(`insert into usher.executions (action_ref) values ('demo.a') returning id`)).rows[0].id;
});
afterAll(() => api.close());

describe('fuzzing every route', () => {
  it(`answers ${runs} random requests below 500, in the envelope, and changes nothing when it refuses`, async () => {
    const statuses = new Map<number, number>();
    await fc.assert(fc.asyncProperty(request, async ({ route, segment, query, body, authorization: header }) => {
      const search = new URLSearchParams(Object.entries(query)).toString();
      const path = `${pathFor(route, segment)}${search ? `?${search}` : ''}`;
      const before = await snapshot(api.t.pool);
      const res = await api.request(route.method.toUpperCase(), path, {
        token: null, body, headers: header === null ? {} : { authorization: header },
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      expect(res.status, `${route.method} ${path} ${JSON.stringify(body)}`).toBeLessThan(500);
      expect(JSON.stringify(res.body ?? '')).not.toMatch(/syntax error|violates|relation "|DatabaseError|\n\s+at |node_modules/);
      if (res.status >= 400) expect(await snapshot(api.t.pool)).toEqual(before);
    }), { seed, numRuns: runs });
    // The mix reached handlers, not only the validators: successes, refusals by auth and by validation.
    expect([200, 400, 401].map((status) => (statuses.get(status) ?? 0) > 0)).toEqual([true, true, true]);
  });
});
