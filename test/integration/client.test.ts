/**
 * The TypeScript client from the package entry point, as an application would use it: enqueue in
 * its own transaction, read, cancel, and wait for the end through LISTEN/NOTIFY.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, UsherError, type UsherClient } from '../../src/index.ts';
import { createLogger } from '../../src/log.ts';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { claimOne, completeClaimed, failClaimed, registerTestWorker } from '../support/queue-states.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;
let usher: UsherClient;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`
    insert into usher.actions (ref) values ('c.free'), ('c.off');
    update usher.actions set enabled = false where ref = 'c.off';`);
  workerId = await registerTestWorker(t.pool, 'client-test', ['c.free']);
  // A poll so long that only NOTIFY (or the reconnect re-check) can end a wait within a test.
  usher = createClient({ connectionString: t.url, pollIntervalMs: 600_000, log: createLogger('silent') });
});
afterAll(async () => {
  await usher.close();
  await t.drop();
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(() => undefined, (caught: unknown) => caught);
  expect(error).toBeInstanceOf(UsherError);
  return (error as UsherError).code;
}

const countOf = async (where: string) => Number((await t.pool.query(`select count(*) from usher.executions where ${where}`)).rows[0].count);

describe('enqueue', () => {
  it('queues inside the caller\'s transaction: nothing on rollback, the row on commit', async () => {
    const own = await t.connect();
    await own.query('begin');
    const rolledBack = await usher.enqueue('c.free', { n: 1 }, { client: own });
    expect(await countOf(`id = ${rolledBack.id}`)).toBe(0);
    await own.query('rollback');
    expect(await countOf(`id = ${rolledBack.id}`)).toBe(0);

    await own.query('begin');
    const committed = await usher.enqueue('c.free', { n: 2 }, { client: own, idempotency_key: 'k-2', max_retries: 3 });
    await own.query('commit');
    expect(await usher.get(committed.id)).toMatchObject({
      id: committed.id, action_ref: 'c.free', params: { n: 2 }, status: 'scheduled', idempotency_key: 'k-2', max_retries: 3,
    });
    expect(committed).not.toHaveProperty('lease_token');
  });

  it('enqueues many in one statement, in the order given, inside the caller\'s transaction, all or none', async () => {
    const own = await t.connect();
    await own.query('begin');
    const rolledBack = await usher.enqueueMany([{ action_ref: 'c.free', params: { n: 1 } }, { action_ref: 'c.free' }], { client: own });
    await own.query('rollback');
    expect(await countOf(`id = any('{${rolledBack.map((execution) => execution.id).join(',')}}')`)).toBe(0);

    await usher.enqueue('c.free', { held: true }, { idempotency_key: 'many-held' });
    const enqueued = await usher.enqueueMany([
      { action_ref: 'c.free', params: { n: 1 } },
      { action_ref: 'c.free', params: { n: 2 }, idempotency_key: 'many-held' },
      { action_ref: 'c.free', params: { n: 3 }, max_retries: 2 },
    ]);
    expect(enqueued.map((execution) => [execution.params, execution.max_retries, execution.status])).toEqual([
      [{ n: 1 }, 0, 'scheduled'], [{ held: true }, 0, 'scheduled'], [{ n: 3 }, 2, 'scheduled'],
    ]);
    expect(Number(enqueued[0]!.id)).toBeLessThan(Number(enqueued[2]!.id));
    expect(enqueued[2]).not.toHaveProperty('lease_token');

    const before = await countOf('true');
    expect(await codeOf(usher.enqueueMany([{ action_ref: 'c.free' }, { action_ref: 'c.nope' }]))).toBe('unknown_action');
    expect(await countOf('true')).toBe(before);
    expect(await usher.enqueueMany([])).toEqual([]);
    await own.end();
  });

  it('fails with the API\'s codes for an unknown or disabled action and for params that are not an object', async () => {
    expect(await codeOf(usher.enqueue('c.nope', {}))).toBe('unknown_action');
    expect(await codeOf(usher.enqueue('c.off', {}))).toBe('action_disabled');
    expect(await codeOf(usher.enqueue('c.free', [1, 2] as never))).toBe('invalid_params');
    expect(await countOf(`action_ref <> 'c.free'`)).toBe(0);
  });
});

describe('get and cancel', () => {
  it('reads an execution, and answers execution_not_found for an unknown or malformed id', async () => {
    const execution = await usher.enqueue('c.free');
    expect((await usher.get(execution.id)).status).toBe('scheduled');
    expect(await codeOf(usher.get('999999999'))).toBe('execution_not_found');
    expect(await codeOf(usher.get('1; drop table usher.executions'))).toBe('execution_not_found');
    expect(await codeOf(usher.get('99999999999999999999'))).toBe('execution_not_found');
  });

  it('cancels a waiting execution, then answers execution_terminal', async () => {
    const execution = await usher.enqueue('c.free');
    const cancelled = await usher.cancel(execution.id, 'not needed');
    expect(cancelled).toMatchObject({ id: execution.id, status: 'cancelled', result: { reason: 'not needed' } });
    expect(await codeOf(usher.cancel(execution.id))).toBe('execution_terminal');
    expect(await codeOf(usher.cancel('999999999'))).toBe('execution_not_found');
  });
});

describe('waitFor', () => {
  it('resolves when the execution ends, woken by NOTIFY', async () => {
    await t.pool.query(`update usher.executions set status = 'cancelled', completed_at = now() where status = 'scheduled'`);
    const execution = await usher.enqueue('c.free', { n: 'wait' });
    const waited = usher.waitFor(execution.id, { timeoutMs: 20_000 });
    const claim = await claimOne(t.pool, workerId, 'c.free');
    expect(claim.id).toBe(execution.id);
    await completeClaimed(t.pool, claim, { done: true });
    expect(await waited).toMatchObject({ id: execution.id, status: 'completed', result: { done: true }, attempt: 1 });
  });

  it('resolves at once for an execution that has ended, and fails for an unknown one', async () => {
    const execution = await usher.enqueue('c.free');
    await usher.cancel(execution.id);
    expect((await usher.waitFor(execution.id)).status).toBe('cancelled');
    expect(await codeOf(usher.waitFor('999999999'))).toBe('execution_not_found');
  });

  it('times out with wait_timeout, and stops waiting when aborted', async () => {
    const execution = await usher.enqueue('c.free');
    expect(await codeOf(usher.waitFor(execution.id, { timeoutMs: 100 }))).toBe('wait_timeout');
    const abort = new AbortController();
    const waited = usher.waitFor(execution.id, { signal: abort.signal });
    abort.abort(new Error('no longer interested'));
    await expect(waited).rejects.toThrow('no longer interested');
    await usher.cancel(execution.id);
  });

  it('settles many waiters at once, each with the end its execution had', async () => {
    await t.pool.query(`update usher.executions set status = 'cancelled', completed_at = now() where status = 'scheduled'`);
    const executions = await Promise.all(Array.from({ length: 20 }, (_, n) => usher.enqueue('c.free', { n })));
    const waits = executions.map((execution) => usher.waitFor(execution.id, { timeoutMs: 20_000 }));
    const twice = usher.waitFor(executions[0]!.id, { timeoutMs: 20_000 });
    for (const _ of executions) {
      const claim = await claimOne(t.pool, workerId, 'c.free');
      if (Number(claim.id) % 2 === 0) await completeClaimed(t.pool, claim, null);
      else await failClaimed(t.pool, claim, 'odd');
    }
    const ended = await Promise.all(waits);
    expect(ended.map((execution) => [execution.id, execution.status])).toEqual(
      executions.map((execution) => [execution.id, Number(execution.id) % 2 === 0 ? 'completed' : 'failed']));
    expect((await twice).id).toBe(executions[0]!.id);
  });

  it('still resolves after its LISTEN connection was killed: it reconnects and re-reads', async () => {
    const execution = await usher.enqueue('c.free');
    const waited = usher.waitFor(execution.id, { timeoutMs: 30_000 });
    const killed = await waitFor(async () => {
      const { rows } = await t.pool.query<{ n: number }>(
        `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
         where datname = current_database() and application_name like 'usher-client-listen:%'`);
      return rows[0]!.n > 0 && rows[0]!.n;
    }, { what: 'the client\'s LISTEN connection' });
    expect(killed).toBe(1);
    // Ended while the client may be disconnected: the re-read after reconnecting finds it.
    await t.pool.query(`update usher.executions set status = 'cancelled', completed_at = now() where id = $1`, [execution.id]);
    expect((await waited).status).toBe('cancelled');
  });
});

describe('admission through the client', () => {
  it('waits for an execution that queues behind a threshold', async () => {
    await t.pool.query(`insert into usher.actions (ref) values ('c.lim'); insert into usher.policies (ref, action_ref, threshold) values ('c-one', 'c.lim', 1)`);
    await t.pool.query(`update usher.workers set actions = actions || '{c.lim}' where id = $1`, [workerId]);
    const [first, second] = [await usher.enqueue('c.lim'), await usher.enqueue('c.lim')];
    await admitQueued(t.pool);
    const waited = usher.waitFor(second.id, { timeoutMs: 20_000 });
    const claimFirst = await claimOne(t.pool, workerId, 'c.lim');
    expect(claimFirst.id).toBe(first.id);
    await completeClaimed(t.pool, claimFirst, 1);
    const claimSecond = await claimOne(t.pool, workerId, 'c.lim');
    expect(claimSecond.id).toBe(second.id);
    await completeClaimed(t.pool, claimSecond, 2);
    expect(await waited).toMatchObject({ id: second.id, status: 'completed', result: 2 });
  });
});

describe('the built package', () => {
  it('builds with the package build and works from plain Node, without TypeScript tooling', async () => {
    const root = fileURLToPath(new URL('../../', import.meta.url));
    const run = promisify(execFile);
    // Into a folder of its own at the depth of dist/: rewriting dist/ under other test files would
    // race with the usher processes they start (bin/usher.js runs dist/ when it is current).
    const outDir = `${root}build-check`;
    await run(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`, '--outDir', outDir], { cwd: root });
    const script = `${outDir}/plain-node-check.mjs`;
    await writeFile(script, `
      import { createClient, UsherError } from './index.js';
      const usher = createClient({ connectionString: process.env.DATABASE_URL });
      const code = (error) => error instanceof UsherError ? error.code : String(error);
      const out = {};
      out.unknown = await usher.enqueue('c.nope').catch(code);
      const execution = await usher.enqueue('c.free', { from: 'plain node' });
      out.ended = (await usher.waitFor(execution.id, { timeoutMs: 20000 })).status;
      await usher.close();
      const down = createClient({ connectionString: 'postgres://postgres@127.0.0.1:1/none' });
      out.down = await down.get('1').catch(code);
      await down.close();
      console.log(JSON.stringify(out));
    `);
    await t.pool.query(`update usher.executions set status = 'cancelled', completed_at = now() where status = 'scheduled'`);
    const child = run(process.execPath, [script], { env: { ...process.env, DATABASE_URL: t.url } });
    const claim = await waitFor(() => claimOne(t.pool, workerId, 'c.free').catch(() => undefined), { what: 'the plain-node enqueue' });
    await completeClaimed(t.pool, claim, 'ok');
    const { stdout } = await child;
    // Only the script's line: the client logs nothing when it works (a warning here is a defect).
    expect(stdout.trim().split('\n'), stdout).toHaveLength(1);
    expect(JSON.parse(stdout)).toEqual({ unknown: 'unknown_action', ended: 'completed', down: 'database_unavailable' });
  });
});
