/**
 * T11 (RELIABILITY.md): workers connected through PgBouncer 1.18 in transaction mode. PgBouncer
 * gets one server connection, so every transaction of every client runs on the same session:
 * anything a worker left there (a prepared statement, a LISTEN) is visible to the test through it.
 * The executor connects directly: it keeps a session by design (LISTEN).
 *
 * Needs the pgbouncer binary (Debian: `apt-get install pgbouncer`). Without it the file is
 * skipped, unless USHER_TEST_REQUIRE_PGBOUNCER=1 (CI sets it) makes the absence a failure.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { findPgbouncer, startPgbouncer, type Pgbouncer } from '../support/pgbouncer.ts';
import { killAll, spawnUsher, startExecutor, startWorker, testPacks, type UsherProcess } from '../support/processes.ts';
import { endLeftovers, events, usePolicy, workerIdOf, type Row } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

const binary = findPgbouncer();
const required = process.env.USHER_TEST_REQUIRE_PGBOUNCER === '1';

describe('the settings', () => {
  it('reads USHER_WORKER_POOL_MODE (session by default) and USHER_WORKER_LISTEN_URL, and refuses any other mode by name', () => {
    expect(loadConfig({})).toMatchObject({ workerPoolMode: 'session', workerListenUrl: undefined });
    expect(loadConfig({ USHER_WORKER_POOL_MODE: 'transaction', USHER_WORKER_LISTEN_URL: 'postgres://db/usher' }))
      .toMatchObject({ workerPoolMode: 'transaction', workerListenUrl: 'postgres://db/usher' });
    for (const mode of ['statement', 'Transaction', '']) {
      expect(() => loadConfig({ USHER_WORKER_POOL_MODE: mode }), mode).toThrow(/^invalid configuration: USHER_WORKER_POOL_MODE: /);
    }
    expect(() => loadConfig({ USHER_WORKER_LISTEN_URL: '' })).toThrow(/^invalid configuration: USHER_WORKER_LISTEN_URL: /);
  });

  it.runIf(required)('finds the pgbouncer binary (USHER_TEST_REQUIRE_PGBOUNCER=1)', () => {
    expect(binary, 'pgbouncer is not installed (Debian: apt-get install pgbouncer)').toBeDefined();
  });
});

describe.skipIf(!binary)('workers behind PgBouncer in transaction mode (T11)', () => {
  let t: TestDatabase;
  let bouncer: Pgbouncer;
  const transactionMode = { USHER_WORKER_POOL_MODE: 'transaction', USHER_POLL_INTERVAL_MS: '100' };

  beforeAll(async () => {
    t = await createTestDatabase();
    // Policies reference actions: registered up front, as a worker would.
    await t.pool.query(`insert into usher.actions (ref) values ('t.work'), ('t.other') on conflict do nothing`);
    bouncer = await startPgbouncer(binary!, t.url, 'transaction');
  });

  afterEach(async () => {
    await killAll();
    await endLeftovers(t.pool);
  });

  afterAll(async () => {
    await killAll();
    await bouncer?.stop();
    await t?.drop();
  });

  async function q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T[]> {
    return (await t.pool.query<T>(sql, values)).rows;
  }

  /** The one server connection's session state, read through PgBouncer. */
  async function sessionState(): Promise<{ prepared: string[]; listening: string[] }> {
    const client = new pg.Client({ connectionString: bouncer.url });
    await client.connect();
    try {
      const prepared = (await client.query<{ name: string }>('select name from pg_prepared_statements order by name')).rows;
      const listening = (await client.query<{ channel: string }>('select pg_listening_channels() as channel')).rows;
      return { prepared: prepared.map((row) => row.name), listening: listening.map((row) => row.channel) };
    } finally {
      await client.end();
    }
  }

  it('runs threshold-1 lanes in order and an unlimited action, with two workers sharing one server connection', { timeout: 120_000 }, async () => {
    await usePolicy(t.pool, 't.work', 'pgbouncer-lanes', 1);
    await startExecutor(t.url);
    const workers: UsherProcess[] = await Promise.all(['a', 'b'].map((name) =>
      startWorker(bouncer.url, { concurrency: 4, name: `pooled-${name}`, env: transactionMode })));
    expect(workers.map((worker) => events(worker, 'worker:started')[0]?.pool_mode)).toEqual(['transaction', 'transaction']);

    await q(`insert into usher.executions (action_ref, params)
      select 't.work', jsonb_build_object('lane', lane, 'n', n, 'ms', n % 3)
      from generate_series(1, 40) n, unnest(array['x', 'y', 'z']) lane order by n, lane`);
    await q(`insert into usher.executions (action_ref, params) select 't.other', jsonb_build_object('n', n) from generate_series(1, 200) n`);
    await waitFor(async () => (await q(`select 1 from usher.executions where status <> 'completed' limit 1`)).length === 0,
      { what: 'every execution completed', timeoutMs: 90_000, intervalMs: 50 });

    expect(await q(`select action_ref, status, count(*)::int as n from usher.executions group by 1, 2 order by 1`)).toEqual([
      { action_ref: 't.other', status: 'completed', n: 200 },
      { action_ref: 't.work', status: 'completed', n: 120 },
    ]);
    // In each lane, every execution started after the one enqueued before it had ended.
    expect(await q(`
      select id, previous from (
        select e.id, lag(e.id) over w as previous, e.started_at, lag(e.completed_at) over w as previous_completed_at
        from usher.executions e where e.action_ref = 't.work'
        window w as (partition by e.lane_key order by e.id)
      ) s where previous is not null and started_at < previous_completed_at`)).toEqual([]);
    expect(await q(`select lane_key, active_count, total_admitted::int from usher.lanes where lane_key like 'action:t.work#%' order by 1`)).toEqual([
      { lane_key: 'action:t.work#["x"]', active_count: 0, total_admitted: 40 },
      { lane_key: 'action:t.work#["y"]', active_count: 0, total_admitted: 40 },
      { lane_key: 'action:t.work#["z"]', active_count: 0, total_admitted: 40 },
    ]);
    expect(await q('select lane_key, problem from usher.check_invariants()')).toEqual([]);
    // Every execution ran on one of the two pooled workers, each on its first attempt.
    const ids = workers.map(workerIdOf);
    expect(await q(`select count(*)::int as n from usher.executions where attempt <> 1 or not (worker_id = any($1::bigint[]))`, [ids]))
      .toEqual([{ n: 0 }]);
    // Nothing failed on the way and had to be tried again.
    for (const worker of workers) {
      expect(worker.lines.filter((line) => /claim:failed|mark_retrying|heartbeat:failed|client_error/.test(line))).toEqual([]);
    }
    // Nothing of the workers' stayed on the server connection they all shared.
    expect(await sessionState()).toEqual({ prepared: [], listening: [] });
  });

  it('hears of a cancel from the next heartbeat, with no LISTEN', { timeout: 60_000 }, async () => {
    await startExecutor(t.url);
    const worker = await startWorker(bouncer.url, { concurrency: 2, name: 'pooled-cancel', env: { ...transactionMode, USHER_LEASE_SECONDS: '3' } });
    const [running] = await q<{ id: string }>(`insert into usher.executions (action_ref, params) values ('t.other', '{"ms": 60000}') returning id`);
    await waitFor(async () => (await q(`select 1 from usher.executions where id = $1 and status = 'running'`, [running!.id])).length === 1,
      { what: 'the execution running', timeoutMs: 20_000 });
    expect(await q('select id, status, changed from usher.cancel_execution($1, $2)', [running!.id, 'test: stop it']))
      .toEqual([{ id: running!.id, status: 'canceling', changed: true }]);
    await waitFor(async () => (await q(`select 1 from usher.executions where id = $1 and status = 'cancelled'`, [running!.id])).length === 1,
      { what: 'the execution cancelled', timeoutMs: 20_000 });
    expect(await q('select status, error, result, attempt, worker_id from usher.executions where id = $1', [running!.id])).toEqual([{
      status: 'cancelled', error: 'aborted by cancel', result: { reason: 'test: stop it' }, attempt: 1, worker_id: workerIdOf(worker),
    }]);
    expect(await sessionState()).toEqual({ prepared: [], listening: [] });
  });

  it('wakes by NOTIFY when USHER_WORKER_LISTEN_URL gives it a direct connection to LISTEN on', { timeout: 90_000 }, async () => {
    const worker = await startWorker(bouncer.url, {
      concurrency: 1,
      name: 'pooled-notify',
      // A poll this long never comes within the test: only a NOTIFY can wake the worker.
      env: { ...transactionMode, USHER_POLL_INTERVAL_MS: '600000', USHER_WORKER_LISTEN_URL: t.url },
    });
    expect(events(worker, 'worker:started')[0]).toMatchObject({ pool_mode: 'transaction', wakes_by: 'notify' });
    await waitFor(async () => (await q(`select 1 from pg_stat_activity
      where datname = current_database() and application_name = 'usher-worker-listen:pooled-notify' and query ilike 'listen%canceling%'`)).length === 1,
    { what: 'the worker listening on its direct connection', timeoutMs: 20_000 });
    await startExecutor(t.url);
    // One at a time, each enqueued once the one before has completed and the worker has gone back to sleep.
    const ids: string[] = [];
    for (const n of [1, 2, 3]) {
      const [row] = await q<{ id: string }>(`insert into usher.executions (action_ref, params) values ('t.other', $1) returning id`, [{ n }]);
      ids.push(row!.id);
      await waitFor(async () => (await q(`select 1 from usher.executions where id = $1 and status = 'completed'`, [row!.id])).length === 1,
        { what: `execution ${n} completed`, timeoutMs: 20_000 });
    }
    expect(await q(`select params->>'n' as n, worker_id from usher.executions where id = any($1::bigint[]) order by id`, [ids]))
      .toEqual(['1', '2', '3'].map((n) => ({ n, worker_id: workerIdOf(worker) })));
    expect(await sessionState()).toEqual({ prepared: [], listening: [] });
  });

  it('a worker left in session mode is refused at its first connection and exits, naming the parameter', { timeout: 60_000 }, async () => {
    // Its connections set statement_timeout at connect, which PgBouncer 1.18 does not carry.
    const worker = spawnUsher(['worker', '--packs', testPacks, '--concurrency', '1'], { DATABASE_URL: bouncer.url });
    const exit = await worker.exited;
    expect(exit.code).not.toBe(0);
    expect(worker.lines.some((line) => line.includes('unsupported startup parameter: statement_timeout'))).toBe(true);
    expect(await q('select count(*)::int as n from usher.workers where pid = $1', [worker.child.pid])).toEqual([{ n: 0 }]);
  });
});
