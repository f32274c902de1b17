/**
 * RELIABILITY T29's rate limit: each token has its own budget per window, requests without a valid
 * token share their address's, probes are never limited, and a 429 changes nothing.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_TOKEN, READ_TOKEN, snapshot, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api.ts';

const LIMIT = 5;
let api: TestApi;

beforeAll(async () => {
  // A window far longer than the test, so no window ends in the middle of it.
  api = await startTestApi({ rateLimit: { limit: LIMIT, windowSeconds: 600 } });
  await api.t.pool.query(`insert into usher.actions (ref) values ('demo.a')`);
});
afterAll(() => api.close());

const statuses = async (count: number, send: () => Promise<{ status: number }>) => {
  const seen: number[] = [];
  for (let i = 0; i < count; i += 1) seen.push((await send()).status);
  return seen;
};

it('answers 429 with Retry-After past a token\'s budget, counts each token and each unauthenticated address apart, and never limits probes', async () => {
  const enqueue = () => api.request('POST', '/executions/execute', { body: { action_ref: 'demo.a', parameters: {} } });
  expect(await statuses(LIMIT, enqueue)).toEqual(Array(LIMIT).fill(201));

  const before = await snapshot(api.t.pool);
  const limited = await enqueue();
  expect([limited.status, limited.body.error.code]).toEqual([429, 'rate_limited']);
  expect(limited.body.error.message).toBe(`more than ${LIMIT} requests in 600 s from this client; retry after the time in Retry-After`);
  const retryAfter = Number(limited.headers.get('retry-after'));
  expect(retryAfter).toBeGreaterThan(590);
  expect(retryAfter).toBeLessThanOrEqual(600);
  expect(limited.headers.get('ratelimit')).toMatch(/^limit=5, remaining=0, reset=\d+$/);
  // Limited on every route, reads included, with nothing written.
  expect((await api.request('GET', '/executions')).status).toBe(429);
  expect(await snapshot(api.t.pool)).toEqual(before);
  expect((await api.t.pool.query(`select count(*)::int as n from usher.executions`)).rows).toEqual([{ n: LIMIT }]);

  // The read token has a budget of its own.
  expect(await statuses(LIMIT + 1, () => api.request('GET', '/executions', { token: READ_TOKEN }))).toEqual([...Array(LIMIT).fill(200), 429]);

  // Requests without a valid token count against the address: guessing tokens is limited too.
  const guesses = await statuses(LIMIT + 2, () => api.request('GET', '/executions', { token: `guess-${Math.random().toString(36).slice(2)}-0123456789` }));
  expect(guesses).toEqual([...Array(LIMIT).fill(401), 429, 429]);
  expect((await api.request('GET', '/executions', { token: null })).status).toBe(429);

  // Probes and the OpenAPI document are outside every budget.
  expect(await statuses(LIMIT * 3, () => api.request('GET', '/health', { token: null }))).toEqual(Array(LIMIT * 3).fill(200));
  expect((await api.request('GET', '/openapi.json', { token: null })).status).toBe(200);
  expect((await api.request('GET', '/executions', { token: ADMIN_TOKEN })).status).toBe(429);
  expect((await api.request('GET', '/executions', { token: WRITE_TOKEN })).status).toBe(200);
});

it('documents 429 rate_limited and 503 overloaded on every guarded route', async () => {
  const { body } = await api.request('GET', '/openapi.json', { token: null });
  const operations = Object.values(body.paths as Record<string, Record<string, { 'x-usher-access': string; responses: Record<string, { description: string }> }>>)
    .flatMap((methods) => Object.values(methods));
  const guarded = operations.filter((operation) => operation['x-usher-access'] !== 'public');
  expect(guarded.length).toBeGreaterThan(15);
  for (const operation of guarded) {
    expect(operation.responses['429']?.description).toBe('Error: rate_limited');
    expect(operation.responses['503']?.description).toMatch(/overloaded/);
  }
  for (const operation of operations.filter((operation) => operation['x-usher-access'] === 'public')) {
    expect(operation.responses['429']).toBeUndefined();
  }
});

it('reads the limits from the environment, with defaults, and refuses values that are not counts', () => {
  expect(loadConfig({})).toMatchObject({ apiPoolSize: 10, apiMaxWaiting: 100, apiRateLimit: 200, apiRateWindowSeconds: 1 });
  expect(loadConfig({ USHER_API_POOL_SIZE: '3', USHER_API_MAX_WAITING: '0', USHER_API_RATE_LIMIT: '0', USHER_API_RATE_WINDOW_SECONDS: '60' }))
    .toMatchObject({ apiPoolSize: 3, apiMaxWaiting: 0, apiRateLimit: 0, apiRateWindowSeconds: 60 });
  for (const [name, value] of [['USHER_API_POOL_SIZE', '0'], ['USHER_API_MAX_WAITING', '-1'], ['USHER_API_RATE_LIMIT', 'many'],
    ['USHER_API_RATE_WINDOW_SECONDS', '0'], ['USHER_API_RATE_LIMIT', '1.5']] as const) {
    expect(() => loadConfig({ [name]: value }), `${name}=${value}`).toThrow(new RegExp(`^invalid configuration: ${name}: `));
  }
});
