/**
 * The README's main job: `usher start` with no DATABASE_URL brings up an embedded Postgres, the
 * schema, an executor and a worker on the example packs; Ctrl-C stops all of it. And `usher
 * migrate` on the embedded default: it stops the server it started and exits 0.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, expect, it } from 'vitest';
import { clusterDir } from '../../src/db/embedded.ts';
import { killAll, spawnUsher } from '../support/processes.ts';
import { freePort } from '../support/ports.ts';
import { waitFor } from '../support/wait.ts';


const dataDirs: string[] = [];
afterAll(async () => {
  await killAll();
  // Run as root, the cluster lives outside the data folder (see clusterDir).
  for (const dir of dataDirs) await Promise.all([dir, clusterDir(dir)].map((path) => rm(path, { recursive: true, force: true })));
});

async function newDataDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  dataDirs.push(dir);
  return dir;
}

it('runs the example pack on an embedded Postgres with no DATABASE_URL, and stops everything on SIGINT', async () => {
  const dataDir = await newDataDir('usher-start-');
  const port = await freePort();
  const start = spawnUsher(['start'], {
    DATABASE_URL: undefined,
    USHER_DATA_DIR: dataDir,
    USHER_EMBEDDED_PORT: String(port),
  });
  const ready = await start.waitForEvent('start:ready', 90_000);
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/usher`;
  expect(ready.database_url).toBe(url);
  await start.waitForEvent('executor:started');
  await start.waitForEvent('worker:started');

  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    // The worker registers the example actions when it starts.
    await waitFor(async () => (await client.query(`select 1 from usher.workers where status = 'active'`)).rowCount === 1, { what: 'the worker' });
    const { rows: [row] } = await client.query(
      `insert into usher.executions (action_ref, params) values ('demo.echo', '{"n": 1}') returning id`);
    const done = await waitFor(async () => {
      const { rows } = await client.query(`select status, result from usher.executions where id = $1 and status = 'completed'`, [row.id]);
      return rows[0];
    }, { what: 'demo.echo to complete' });
    expect(done).toEqual({ status: 'completed', result: { echoed: { n: 1 } } });
    const { rows: actions } = await client.query(`select ref from usher.actions order by ref`);
    expect(actions.map((action) => action.ref)).toEqual(['demo.echo', 'demo.fail', 'demo.sleep']);
  } finally {
    await client.end();
  }

  start.kill('SIGINT');
  expect(await start.exited).toEqual({ code: 0, signal: null });
  const events = start.lines.map((line) => { try { return JSON.parse(line).event as string; } catch { return ''; } });
  expect(events).toContain('worker:stopped');
  expect(events).toContain('executor:stopped');
  expect(events.at(-1)).toBe('embedded_pg:stopped');
  const after = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  await expect(after.connect()).rejects.toThrow();
});

it('migrates an embedded Postgres with no DATABASE_URL, stops it, and exits 0 once it has stopped', async () => {
  const port = await freePort();
  const env = { DATABASE_URL: undefined, USHER_DATA_DIR: await newDataDir('usher-migrate-'), USHER_EMBEDDED_PORT: String(port) };
  for (const round of ['new cluster', 'existing cluster']) {
    const migrate = spawnUsher(['migrate'], env);
    // Before the fix the process ended with code 13 while the server was still shutting down.
    expect([round, await migrate.exited]).toEqual([round, { code: 0, signal: null }]);
    const events = migrate.lines.map((line) => { try { return JSON.parse(line).event as string; } catch { return ''; } });
    expect([round, events.includes('schema:migrated'), events.at(-1)])
      .toEqual([round, true, 'embedded_pg:stopped']);
  }
  const after = new pg.Client({ connectionString: `postgres://postgres:postgres@127.0.0.1:${port}/usher`, connectionTimeoutMillis: 2000 });
  await expect(after.connect()).rejects.toThrow();
});
