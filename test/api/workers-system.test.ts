import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { READ_TOKEN, startTestApi, type TestApi } from '../support/api.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { claimOne, registerTestWorker } from '../support/queue-states.ts';

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi();
});
afterAll(() => api.close());

describe('GET /workers', () => {
  it('lists workers newest first with heartbeat age, running count and actions', async () => {
    const first = await registerTestWorker(api.t.pool, 'w-old', ['demo.a']);
    const second = await registerTestWorker(api.t.pool, 'w-new', ['demo.a', 'demo.b']);
    await api.t.pool.query(`update usher.workers set heartbeat_at = now() - interval '90 seconds' where id = $1`, [first]);
    await api.t.pool.query(`update usher.workers set status = 'stopped', stopped_at = now() where id = $1`, [first]);
    await api.t.pool.query(`insert into usher.executions (action_ref) values ('demo.a'), ('demo.a'), ('demo.b')`);
    await claimOne(api.t.pool, second, 'demo.a');
    await claimOne(api.t.pool, second, 'demo.a');
    const { rows } = await api.t.pool.query('select id, started_at, heartbeat_at, stopped_at from usher.workers order by id desc');
    const res = await api.request('GET', '/workers', { token: READ_TOKEN });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      data: [
        {
          id: second, name: 'w-new', host: 'test-host', pid: 4242, status: 'active', actions: ['demo.a', 'demo.b'], concurrency: 4,
          started_at: rows[0].started_at.toISOString(), heartbeat_at: rows[0].heartbeat_at.toISOString(), stopped_at: null,
          heartbeat_age_seconds: expect.any(Number), running_count: 2,
        },
        {
          id: first, name: 'w-old', host: 'test-host', pid: 4242, status: 'stopped', actions: ['demo.a'], concurrency: 4,
          started_at: rows[1].started_at.toISOString(), heartbeat_at: rows[1].heartbeat_at.toISOString(),
          stopped_at: rows[1].stopped_at.toISOString(), heartbeat_age_seconds: expect.any(Number), running_count: 0,
        },
      ],
      pagination: { page: 1, page_size: 50, total_items: 2, total_pages: 1 },
    });
    expect(res.body.data[0].heartbeat_age_seconds).toBeGreaterThanOrEqual(0);
    expect(res.body.data[0].heartbeat_age_seconds).toBeLessThan(60);
    expect(res.body.data[1].heartbeat_age_seconds).toBeGreaterThanOrEqual(90);
    const active = await api.request('GET', '/workers?status=active', { token: READ_TOKEN });
    expect(active.body.data.map((worker: { id: string }) => worker.id)).toEqual([second]);
    const bad = await api.request('GET', '/workers?status=sleeping', { token: READ_TOKEN });
    expect([bad.status, bad.body.error.details[0].field]).toEqual([400, 'status']);
  });
});

describe('health and readiness', () => {
  it('answers liveness and readiness without a token', async () => {
    expect((await api.request('GET', '/health', { token: null })).body).toEqual({ data: { status: 'ok' } });
    const ready = await api.request('GET', '/ready', { token: null });
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ data: { status: 'ready', database: 'reachable', schema_version: expect.stringMatching(/^\d{4}_[a-z0-9_]+\.sql$/) } });
  });

  describe('when the schema is behind or the database is gone', () => {
    let stale: TestDatabase;
    beforeAll(async () => {
      stale = await createTestDatabase();
    });
    afterAll(() => stale.drop());

    it('is not ready (503) while a migration is pending or sql/ differs, naming it', async () => {
      const { rows } = await stale.pool.query(`select name from usher.schema_migrations where name <> 'sql/' order by name desc limit 1`);
      await stale.pool.query(`delete from usher.schema_migrations where name = $1`, [rows[0].name]);
      await stale.pool.query(`update usher.schema_migrations set checksum = 'old' where name = 'sql/'`);
      const other = await startTestApi({ database: stale });
      try {
        const res = await other.request('GET', '/ready', { token: null });
        expect(res.status).toBe(503);
        expect(res.body.error).toEqual({
          code: 'not_ready', request_id: expect.any(String),
          message: `schema is not up to date: pending migrations: ${rows[0].name}; sql/ definitions differ from the ones applied (run usher migrate)`,
        });
      } finally {
        await other.close();
      }
    });

    it('answers 503 database_unavailable when the database cannot be reached, and stays alive', async () => {
      const pool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', connectionTimeoutMillis: 2000 });
      pool.on('error', () => undefined);
      const down = await startTestApi({ database: stale, pool });
      try {
        const ready = await down.request('GET', '/ready', { token: null });
        expect([ready.status, ready.body.error.code, ready.body.error.message]).toEqual([503, 'database_unavailable', 'the database is unavailable']);
        const list = await down.request('GET', '/executions');
        expect([list.status, list.body.error.code, list.headers.get('retry-after')]).toEqual([503, 'database_unavailable', '2']);
        expect(JSON.stringify(list.body)).not.toMatch(/ECONNREFUSED|127\.0\.0\.1:1/);
        expect((await down.request('GET', '/health', { token: null })).status).toBe(200);
      } finally {
        await down.close();
        await pool.end();
      }
    });
  });
});
