/**
 * Scenarios 8, 9 and 11 (USHER_CHAOS=full): more handlers than connections, a handler ten leases
 * long, and a producer's transaction left open after inserting.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { killAll, startExecutor } from '../support/processes.ts';
import { events, usePolicy, workerIdOf } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectSoundQueue, FULL, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

describe.runIf(FULL)('pressure', () => {
  const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work'), ('c.query'), ('c.herd')`);
  afterEach(() => killAll());

  it('8: runs 40 handlers at once on a worker whose own pool has 3 connections, handlers queueing for 2 of theirs: no deadlock, no lost mark', { timeout: 180_000 }, async () => {
    const env = { USHER_LEASE_SECONDS: '2', CHAOS_HANDLER_POOL: '2' };
    const worker = await startChaosWorker(chaos.t.url, { concurrency: 40, name: 'crowded', env });
    const range = await enqueueSpread(chaos.t.pool, 'c.query', 200, { ms: 150 });
    // 40 handlers × 150 ms over 2 handler connections: a handler waits up to ~3 s for one, past the
    // 2 s lease, while heartbeats and marks use the worker's own connections.
    expect(await waitAllEnded(chaos.t.pool, range, 120_000)).toEqual({ completed: 200 });
    const { rows: [stats] } = await chaos.t.pool.query(
      `select count(*) filter (where attempt <> 1)::int as retried, max(extract(epoch from completed_at - started_at))::float8 as longest_s,
              count(distinct (result->>'n'))::int as distinct_n
       from usher.executions where id between $1 and $2`, [range.first, range.last]);
    expect(stats).toMatchObject({ retried: 0, distinct_n: 200 });
    expect(stats.longest_s).toBeGreaterThan(2);
    expect((await chaos.t.pool.query(`select count(*)::int as n from usher.execution_attempts`)).rows).toEqual([{ n: 0 }]);
    for (const event of ['execution:lease_lost', 'execution:mark_fenced', 'execution:mark_retrying', 'worker:mark_impossible']) expect(events(worker, event)).toEqual([]);
    const { rows: connections } = await chaos.t.pool.query(
      `select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like 'usher-worker%'`);
    console.info(`pool exhaustion: 200 completed by 40 concurrent handlers; longest wait-and-run ${stats.longest_s.toFixed(1)} s against a 2 s lease; worker connections ${connections[0].n}`);
  });

  it('9: never rescues a handler ten leases long while its worker heartbeats, and the lane waits for it', { timeout: 120_000 }, async () => {
    await usePolicy(chaos.t.pool, 'c.work', 'chaos-long', 1);
    await startExecutor(chaos.t.url, { USHER_LEASE_SECONDS: '1' });
    const worker = await startChaosWorker(chaos.t.url, { concurrency: 2, name: 'patient', env: { USHER_LEASE_SECONDS: '1' } });
    const { rows: [long, next] } = await chaos.t.pool.query(
      `insert into usher.executions (action_ref, params) values ('c.work', '{"lane": "long", "ms": 10000}'), ('c.work', '{"lane": "long", "ms": 10}') returning id`);
    const seen = new Set<string>();
    await waitFor(async () => {
      const { rows } = await chaos.t.pool.query(`select status, lease_expires_at::text as lease from usher.executions where id = $1`, [long.id]);
      if (rows[0].lease) seen.add(rows[0].lease);
      return rows[0].status === 'completed';
    }, { what: 'the long execution to complete', timeoutMs: 30_000, intervalMs: 100 });
    await waitFor(async () => (await chaos.t.pool.query(`select status from usher.executions where id = $1`, [next.id])).rows[0].status === 'completed',
      { what: 'the next to complete' });
    const { rows } = await chaos.t.pool.query(
      `select id, status, attempt, worker_id, extract(epoch from completed_at - started_at)::float8 as ran_s, started_at, completed_at
       from usher.executions where id = any($1) order by id`, [[long.id, next.id]]);
    expect(rows.map(({ id, status, attempt, worker_id }) => ({ id, status, attempt, worker_id }))).toEqual([
      { id: long.id, status: 'completed', attempt: 1, worker_id: workerIdOf(worker) },
      { id: next.id, status: 'completed', attempt: 1, worker_id: workerIdOf(worker) },
    ]);
    expect(rows[0].ran_s).toBeGreaterThanOrEqual(10);
    expect(rows[1].started_at.getTime()).toBeGreaterThanOrEqual(rows[0].completed_at.getTime());
    expect((await chaos.t.pool.query(`select count(*)::int as n from usher.execution_attempts where execution_id = $1`, [long.id])).rows).toEqual([{ n: 0 }]);
    // Renewed every third of a lease: well over 10 distinct expiries seen while it ran.
    expect(seen.size).toBeGreaterThanOrEqual(10);
    console.info(`long handler: ran ${rows[0].ran_s.toFixed(1)} s on a 1 s lease, ${seen.size} distinct lease expiries observed, never rescued`);
  });

  it('11: a producer transaction left idle after inserting blocks no other producer or worker, and its executions run once it commits', { timeout: 120_000 }, async () => {
    await usePolicy(chaos.t.pool, 'c.work', 'chaos-idle', 2);
    await startExecutor(chaos.t.url);
    await startChaosWorker(chaos.t.url, { concurrency: 4, name: 'unblocked' });
    const idle = await chaos.t.connect();
    await idle.query('begin');
    const { rows: hidden } = await idle.query(
      `insert into usher.executions (action_ref, params) select 'c.work', jsonb_build_object('lane', 'shared0', 'n', g) from generate_series(1, 10) g returning id`);
    await idle.query(`insert into usher.executions (action_ref, params) values ('c.herd', '{}')`);

    // Other producers, into the same lane, another lane, and an action with no policy; workers run them all.
    const shared = await enqueueSpread(chaos.t.pool, 'c.work', 30, { prefix: 'shared', lanes: 1, ms: 5 });
    const other = await enqueueSpread(chaos.t.pool, 'c.work', 30, { prefix: 'other', lanes: 1, ms: 5 });
    const free = await enqueueSpread(chaos.t.pool, 'c.herd', 30, { ms: 5 });
    for (const range of [shared, other, free]) expect(await waitAllEnded(chaos.t.pool, range, 30_000)).toEqual({ completed: 30 });
    const { rows: [state] } = await chaos.t.pool.query(
      `select state, wait_event_type from pg_stat_activity where pid = $1`, [(await idle.query('select pg_backend_pid() as pid')).rows[0].pid]);
    expect(state).toEqual({ state: 'idle in transaction', wait_event_type: 'Client' });
    const { rows: waiting } = await chaos.t.pool.query(
      `select application_name from pg_stat_activity where datname = current_database() and application_name like 'usher-%' and wait_event_type = 'Lock'`);
    expect(waiting).toEqual([]);

    await idle.query('commit');
    const committed = { first: hidden[0].id, last: hidden.at(-1).id };
    expect(await waitAllEnded(chaos.t.pool, committed, 30_000)).toEqual({ completed: 10 });
    expect((await chaos.t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);
    expect((await chaos.t.pool.query('select lane_key, active_count from usher.lanes where active_count <> 0')).rows).toEqual([]);
    // Visible only at commit, the ten joined their lane then: admitted after the younger executions
    // committed before them (the documented limit of FIFO: order among committed executions).
    const { rows: order } = await chaos.t.pool.query(
      `select (select max(seq) from public.chaos_admissions where id between $1 and $2) < (select min(seq) from public.chaos_admissions where id between $3 and $4) as after`,
      [shared.first, shared.last, committed.first, committed.last]);
    expect(order).toEqual([{ after: true }]);
    console.info('idle producer transaction: 90 executions of other producers ran while it sat idle in transaction; its 10 ran after its commit');
  });
});

describe.runIf(FULL)('thundering herd', () => {
  const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work'), ('c.herd')`);

  it('10: runs 50,000 executions inserted in one statement while 8 workers start at once, each exactly once, lanes in order', { timeout: 600_000 }, async () => {
    await usePolicy(chaos.t.pool, 'c.work', 'chaos-herd', 10);
    await startExecutor(chaos.t.url);
    const startedAt = Date.now();
    const [insert] = await Promise.all([
      chaos.t.pool.query<{ first: string; last: string }>(
        `with inserted as (
           insert into usher.executions (action_ref, params)
           select case when g % 5 = 0 then 'c.work' else 'c.herd' end, jsonb_build_object('lane', 'l' || (g % 20), 'n', g)
           from generate_series(0, 49999) g order by g returning id)
         select min(id) as first, max(id) as last from inserted`),
      ...Array.from({ length: 8 }, (_, i) => startChaosWorker(chaos.t.url, { concurrency: 10, name: `herd-${i}` })),
    ]);
    const range = insert.rows[0]!;
    expect(await waitAllEnded(chaos.t.pool, range, 560_000)).toEqual({ completed: 50_000 });
    const seconds = (Date.now() - startedAt) / 1000;
    const { rows: [stats] } = await chaos.t.pool.query(
      `select count(*) filter (where attempt <> 1)::int as retried, count(distinct worker_id)::int as workers from usher.executions where id between $1 and $2`,
      [range.first, range.last]);
    expect(stats).toEqual({ retried: 0, workers: 8 });
    await expectSoundQueue(chaos.t.pool, range);
    console.info(`thundering herd: 50,000 in one INSERT, 8 workers started together: all completed once in ${seconds.toFixed(0)} s (${Math.round(50_000 / seconds)}/s)`);
  });
});
