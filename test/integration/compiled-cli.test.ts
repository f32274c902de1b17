/**
 * bin/usher.js runs the compiled CLI when dist/ is current, with no TypeScript loader in the
 * process unless a pack needs one. Built into a package layout of its own under the temp dir
 * (links to src/, sql/, migrations/, node_modules/), so the repository's dist/ is left alone.
 */
import { execFile } from 'node:child_process';
import { cp, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { spawnUsher, killAll, testPacks } from '../support/processes.ts';
import { events } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
let t: TestDatabase;
let packageRoot: string;

beforeAll(async () => {
  t = await createTestDatabase();
  packageRoot = await mkdtemp(join(tmpdir(), 'usher-compiled-'));
  for (const entry of ['src', 'sql', 'migrations', 'examples', 'node_modules', 'package.json']) {
    await symlink(join(root, entry), join(packageRoot, entry));
  }
  await cp(join(root, 'bin'), join(packageRoot, 'bin'), { recursive: true });
  await promisify(execFile)(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(packageRoot, 'dist')], { cwd: root });
}, 120_000);

afterAll(async () => {
  await killAll();
  await t.drop();
  await rm(packageRoot, { recursive: true, force: true });
});

function startCompiledWorker(packs: string, name: string) {
  return spawnUsher(['worker', '--packs', packs, '--concurrency', '2', '--name', name], { DATABASE_URL: t.url }, join(packageRoot, 'bin/usher.js'));
}

describe('the compiled CLI', () => {
  it('runs from dist/ without the TypeScript loader, and loads it only for a pack that imports TypeScript', async () => {
    const plain = startCompiledWorker(join(root, 'bench/packs'), 'compiled-plain');
    await plain.waitForEvent('worker:started');
    // Under tsx (the sources) the loader would be there from the start: this is dist/ running.
    expect(events(plain, 'worker:packs_loaded')).toMatchObject([{ actions: 1, typescript_loader: false }]);
    const { rows: [row] } = await t.pool.query(`insert into usher.executions (action_ref) values ('bench.noop') returning id`);
    await waitFor(async () => (await t.pool.query(`select status from usher.executions where id = $1`, [row.id])).rows[0]?.status === 'completed', { what: 'bench.noop completed' });

    // test/packs/t/fatal.mjs imports src/worker/runner.ts.
    const typed = startCompiledWorker(testPacks, 'compiled-typed');
    await typed.waitForEvent('worker:started');
    expect(events(typed, 'worker:packs_loaded')).toMatchObject([{ typescript_loader: true }]);
    const { rows: [fatal] } = await t.pool.query(`insert into usher.executions (action_ref, params, max_retries) values ('t.fatal', '{"kind": "class"}', 3) returning id`);
    const ended = await waitFor(async () => {
      const { rows: [state] } = await t.pool.query(`select status, attempt, error from usher.executions where id = $1`, [fatal.id]);
      return state.status === 'failed' ? state : undefined;
    }, { what: 't.fatal failed' });
    expect(ended).toEqual({ status: 'failed', attempt: 1, error: 'NonRetryableError: permanent refusal ()' });
  });
});
