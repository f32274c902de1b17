/** The `usher api` command and the api child of `usher start`, as real processes. */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, spawnUsher } from '../support/processes.ts';
import { ADMIN_TOKEN, READ_TOKEN, WRITE_TOKEN } from '../support/api.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await killAll();
  await t.drop();
});

it('serves the API with `usher api`, and stops cleanly on SIGTERM', async () => {
  const api = spawnUsher(['api', '--port', '0', '--host', '127.0.0.1'], {
    DATABASE_URL: t.url, USHER_API_TOKENS: `read:${READ_TOKEN},write:${WRITE_TOKEN},admin:${ADMIN_TOKEN}`,
  });
  const listening = await api.waitForEvent('api:listening');
  expect(listening).toMatchObject({
    auth: 'bearer', read_tokens: 1, write_tokens: 1, admin_tokens: 1, url: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/),
  });
  const base = `${listening.url as string}/api/v1`;
  expect(await (await fetch(`${base}/health`)).json()).toEqual({ data: { status: 'ok' } });
  expect((await fetch(`${base}/executions`)).status).toBe(401);
  const list = await fetch(`${base}/executions`, { headers: { authorization: `Bearer ${READ_TOKEN}` } });
  expect(await list.json()).toEqual({ data: [], pagination: { page: 1, page_size: 50, total_items: 0, total_pages: 0 } });
  const put = (token: string) => fetch(`${base}/actions/cli.a`, {
    method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}',
  });
  expect((await put(WRITE_TOKEN)).status).toBe(403);
  expect((await put(ADMIN_TOKEN)).status).toBe(201);
  await api.waitForEvent('http:request');
  api.kill('SIGTERM');
  expect(await api.exited).toEqual({ code: 0, signal: null });
  await api.waitForEvent('api:stopped');
  expect(api.lines.join('\n')).not.toContain(READ_TOKEN);
});

it('refuses to start open on an address other than loopback, before touching the database', async () => {
  const api = spawnUsher(['api', '--port', '0', '--host', '0.0.0.0'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/never', USHER_API_TOKENS: '' });
  const failed = await api.waitForEvent('process:failed');
  expect(failed.msg).toBe('config_invalid: USHER_API_HOST 0.0.0.0 is not a loopback address and USHER_API_TOKENS is empty: '
    + 'refusing to serve the API to the network without authentication');
  expect(await api.exited).toEqual({ code: 1, signal: null });
  const start = spawnUsher(['start'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/never', USHER_API_HOST: '0.0.0.0' });
  expect((await start.waitForEvent('process:failed')).msg).toMatch(/^config_invalid: USHER_API_HOST 0\.0\.0\.0 is not a loopback address/);
  expect(await start.exited).toEqual({ code: 1, signal: null });
});

it('runs the API as a child of `usher start`', async () => {
  const start = spawnUsher(['start'], { DATABASE_URL: t.url, USHER_API_PORT: '0' });
  const listening = await start.waitForEvent('api:listening', 60_000);
  expect(listening).toMatchObject({ component: 'api', auth: 'open' });
  const ready = await fetch(`${listening.url as string}/api/v1/ready`);
  expect(ready.status).toBe(200);
  await start.waitForEvent('worker:started');
  start.kill('SIGINT');
  expect(await start.exited).toEqual({ code: 0, signal: null });
  const events = start.lines.map((line) => { try { return JSON.parse(line).event as string; } catch { return ''; } });
  expect(events).toContain('api:stopped');
});
