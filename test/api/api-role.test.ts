/**
 * RELIABILITY T29's last line: the API's database role cannot run DDL or read other schemas. `usher
 * api` connects as a login role granted usher_api, with USHER_MIGRATE=check: it serves every kind
 * of route, while the role is refused schema changes, other schemas, and erasing the audit log.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, spawnUsher } from '../support/processes.ts';
import { events } from '../support/scenario.ts';

let t: TestDatabase;
const login = `usher_test_api_${randomBytes(4).toString('hex')}`;
const password = randomBytes(12).toString('hex');
let loginUrl: string;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`create role ${login} login password '${password}'; grant usher_api to ${login};
    create table public.secret (x int); insert into public.secret values (42);`);
  const url = new URL(t.url);
  url.username = login;
  url.password = password;
  loginUrl = url.toString();
});
afterAll(async () => {
  await killAll();
  // The login role owns nothing and was granted nothing itself: it can go while its sessions are gone.
  await t.pool.query(`drop role if exists ${login}`);
  await t.drop();
});

it('serves reads, enqueues, admin operations and metrics as usher_api, checking the schema without migrating it', { timeout: 60_000 }, async () => {
  const api = spawnUsher(['api', '--port', '0', '--host', '127.0.0.1'], { DATABASE_URL: loginUrl, USHER_MIGRATE: 'check', USHER_API_TOKENS: '' });
  const base = `${(await api.waitForEvent('api:listening')).url as string}/api/v1`;
  expect(events(api, 'schema:checked')).toHaveLength(1);
  expect(events(api, 'schema:migrated')).toEqual([]);
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${base}${path}`, {
      method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: res.headers.get('content-type')?.startsWith('application/json') ? await res.json() : await res.text() };
  };
  expect((await call('PUT', '/actions/role.a', {})).status).toBe(201);
  expect((await call('POST', '/policies', { ref: 'role-one', enabled: true, priority: 0, scope: { type: 'action', action_ref: 'role.a' }, concurrency: { limit: 1 } })).status).toBe(201);
  const enqueued = await call('POST', '/executions/execute', { action_ref: 'role.a', parameters: { n: 1 }, idempotency_key: 'k' });
  expect(enqueued.status).toBe(201);
  expect((await call('POST', '/executions/execute', { action_ref: 'role.a', parameters: { n: 2 }, idempotency_key: 'k' })).status).toBe(200);
  expect((await call('GET', '/executions?action_ref=role.a')).body.pagination.total_items).toBe(1);
  expect((await call('POST', `/executions/${enqueued.body.data.id}/cancel`, {})).status).toBe(200);
  expect((await call('POST', '/actions/role.a/pause', {})).status).toBe(200);
  expect((await call('POST', '/lanes/unblock', { lane_key: 'action:role.a' })).status).toBe(200);
  expect((await call('DELETE', '/policies/role-one')).status).toBe(200);
  const metrics = await call('GET', '/metrics');
  expect([metrics.status, metrics.body]).toEqual([200, expect.stringContaining('usher_oldest_snapshot_seconds')]);
  expect((await call('GET', '/ready')).status).toBe(200);
  expect((await t.pool.query(`select operation, status from usher.api_audit_log order by id`)).rows.map((row) => row.operation))
    .toEqual(['putAction', 'createPolicy', 'pauseAction', 'unblockLane', 'deletePolicy']);
});

it('refuses the role DDL, other schemas and erasing the audit log (42501), and has pg_read_all_stats for /metrics', async () => {
  const client = new pg.Client({ connectionString: loginUrl });
  await client.connect();
  try {
    const refused: string[] = [];
    for (const sql of [
      'create table usher.extra (x int)',
      'create table public.extra (x int)',
      'alter table usher.executions add column extra int',
      'drop table usher.executions',
      'create or replace function usher.anything_paused() returns boolean language sql as $$ select false $$',
      'create index on usher.executions (params)',
      'select x from public.secret',
      'delete from usher.api_audit_log',
      `update usher.api_audit_log set actor = 'someone else'`,
      'truncate usher.executions',
      `insert into usher.schema_migrations (name, checksum) values ('x', 'y')`,
      `delete from usher.schema_migrations`,
    ]) {
      const error = await client.query(sql).then(() => undefined, (caught: pg.DatabaseError) => caught.code);
      refused.push(`${error}: ${sql}`);
    }
    expect(refused.filter((line) => !line.startsWith('42501: '))).toEqual([]);
    expect((await client.query(`select pg_has_role(current_user, 'pg_read_all_stats', 'member') as stats`)).rows).toEqual([{ stats: true }]);
  } finally {
    await client.end();
  }
});

it('refuses to start with USHER_MIGRATE=check when the schema is not current, naming what differs and changing nothing', { timeout: 30_000 }, async () => {
  await t.pool.query(`update usher.schema_migrations set checksum = 'older' where name = 'sql/'`);
  const api = spawnUsher(['api', '--port', '0', '--host', '127.0.0.1'], { DATABASE_URL: loginUrl, USHER_MIGRATE: 'check', USHER_API_TOKENS: '' });
  expect(await api.exited).toEqual({ code: 1, signal: null });
  expect(api.lines.join('\n')).toContain('USHER_MIGRATE=check and the schema is not current (the sql/ definitions differ): run `usher migrate` as the schema\'s owner');
  expect((await t.pool.query(`select checksum from usher.schema_migrations where name = 'sql/'`)).rows).toEqual([{ checksum: 'older' }]);
});
