/**
 * RELIABILITY T19: the API flooded far past its database pool while a worker whose every handler
 * holds a database connection of its own drains what was accepted. The API must answer every
 * request (201, or 503 with Retry-After: shed at once past the waiting bound, or after the pool's
 * connection timeout), keep its probes answering, lose nothing it accepted and create nothing it
 * refused; the worker's heartbeats and marks, on connections of their own, must keep every lease.
 * `usher api` runs in a process of its own, set by its environment (pool size, waiting bound).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { errorBodySchema } from '../../src/api/errors.ts';
import { createPool } from '../../src/db/pool.ts';
import { createLogger } from '../../src/log.ts';
import { startChaosWorker } from '../chaos/support.ts';
import { startTestApi } from '../support/api.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, spawnUsher } from '../support/processes.ts';
import { events } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

const REQUESTS = 1000;
const POOL_SIZE = 2;
const MAX_WAITING = 6;
const CONCURRENCY = 6;

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`insert into usher.actions (ref) values ('c.query')`);
});
afterAll(async () => {
  await killAll();
  await t.drop();
});

interface Answer {
  readonly n: number;
  readonly status: number;
  readonly body: any;
  readonly retryAfter: string | null;
  readonly ms: number;
}

it(`answers a flood of ${REQUESTS} enqueues on a pool of ${POOL_SIZE} with 201 or a 503 and Retry-After, loses none it accepted and creates none it refused`, { timeout: 120_000 }, async () => {
  // The flood comes from one address here, standing for many clients: the per-client limit (429) is off.
  const api = spawnUsher(['api', '--port', '0', '--host', '127.0.0.1'], {
    DATABASE_URL: t.url, USHER_API_RATE_LIMIT: '0', USHER_API_TOKENS: '', USHER_API_POOL_SIZE: String(POOL_SIZE), USHER_API_MAX_WAITING: String(MAX_WAITING),
  });
  const base = `${(await api.waitForEvent('api:listening')).url as string}/api/v1`;
  // Every handler holds one of the handlers' own connections (as many as the worker's concurrency) for 20 ms.
  const worker = await startChaosWorker(t.url, {
    concurrency: CONCURRENCY, name: 'flooded', env: { USHER_LEASE_SECONDS: '2', CHAOS_HANDLER_POOL: String(CONCURRENCY) },
  });

  let flooding = true;
  const probes: number[] = [];
  const probing = (async () => {
    while (flooding) {
      probes.push((await fetch(`${base}/health`)).status);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  const answers: Answer[] = await Promise.all(Array.from({ length: REQUESTS }, async (_, n) => {
    const started = performance.now();
    const res = await fetch(`${base}/executions/execute`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ action_ref: 'c.query', parameters: { n, ms: 20 } }),
    });
    return { n, status: res.status, body: await res.json(), retryAfter: res.headers.get('retry-after'), ms: performance.now() - started };
  }));
  flooding = false;
  await probing;

  const accepted = answers.filter((a) => a.status === 201);
  const refused = answers.filter((a) => a.status !== 201);
  const refusedBy = (code: string) => refused.filter((a) => a.body.error.code === code);
  const slowest = (list: Answer[]) => Math.max(0, ...list.map((a) => a.ms)).toFixed(0);
  console.info(`API flood: ${accepted.length} accepted, ${refusedBy('overloaded').length} shed (slowest ${slowest(refusedBy('overloaded'))} ms),`
    + ` ${refusedBy('database_unavailable').length} timed out waiting for a connection; slowest answer ${slowest(answers)} ms; ${probes.length} health probes`);

  for (const answer of refused) expect(errorBodySchema.safeParse(answer.body).success).toBe(true);
  expect(refused.map((a) => [a.status, a.retryAfter])).toEqual(refused.map(() => [503, '2']));
  expect(refusedBy('overloaded').length + refusedBy('database_unavailable').length).toBe(refused.length);
  // The flood went past the bound, and the API still served what its pool could.
  expect(refusedBy('overloaded').length).toBeGreaterThan(0);
  expect(accepted.length).toBeGreaterThan(0);
  expect(new Set(probes)).toEqual(new Set([200]));

  // Exactly the accepted enqueues exist, each once, and all of them run to completion on first attempt.
  const { rows } = await t.pool.query<{ id: string; n: number }>(
    `select id, (params->>'n')::int as n from usher.executions where action_ref = 'c.query' order by id`);
  expect(rows.map((row) => row.id).sort()).toEqual(accepted.map((a) => a.body.data.id as string).sort());
  expect(rows.map((row) => row.n).sort((a, b) => a - b)).toEqual(accepted.map((a) => a.n));
  await waitFor(async () => (await t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where action_ref = 'c.query' and completed_at is null`)).rows[0]!.n === 0,
  { what: 'the accepted executions to end', timeoutMs: 60_000, intervalMs: 100 });
  expect((await t.pool.query(
    `select status, attempt, count(*)::int as n from usher.executions where action_ref = 'c.query' group by status, attempt`)).rows)
    .toEqual([{ status: 'completed', attempt: 1, n: accepted.length }]);
  for (const event of ['execution:lease_lost', 'execution:mark_fenced', 'worker:mark_impossible']) expect(events(worker, event)).toEqual([]);

  // A shed request is a warn-level request line, not an error with a stack; the API serves again after the flood.
  const shedLines = await waitFor(() => {
    const lines = events(api, 'http:request').filter((line) => line.error_code === 'overloaded');
    return lines.length >= refusedBy('overloaded').length && lines;
  }, { what: 'a request line for every shed request' });
  expect(shedLines.map((line) => line.level)).toEqual(refusedBy('overloaded').map(() => 'warn'));
  expect(events(api, 'http:failed').filter((line) => line.code === 'overloaded')).toEqual([]);
  const after = await fetch(`${base}/executions/execute`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ action_ref: 'c.query', parameters: { n: REQUESTS } }),
  });
  expect(after.status).toBe(201);
});

it('sheds exactly when the waiting bound is reached: with 0 as soon as a request would wait, with 1 once one waits', async () => {
  for (const maxWaiting of [0, 1]) {
    const pool = createPool({ url: t.url, applicationName: 'usher-api:bound', max: 1, connectionTimeoutMs: 30_000 }, createLogger('silent'));
    const api = await startTestApi({ database: t, pool, maxWaiting });
    try {
      expect((await api.request('GET', '/executions/stats')).status).toBe(200);
      const held = await pool.connect();
      const waiting = maxWaiting === 1 ? pool.query('select 1') : undefined;
      expect(pool.waitingCount).toBe(maxWaiting);
      const shed = await api.request('GET', '/executions/stats');
      expect([shed.status, shed.body.error.code, shed.body.error.message, shed.headers.get('retry-after')])
        .toEqual([503, 'overloaded', `the API is overloaded: ${maxWaiting} requests are waiting for a database connection`, '2']);
      held.release();
      await waiting;
      expect((await api.request('GET', '/executions/stats')).status).toBe(200);
    } finally {
      await api.close();
      await pool.end();
    }
  }
});
