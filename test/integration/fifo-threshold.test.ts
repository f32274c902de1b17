/**
 * Strict FIFO admission under a threshold, end to end: real `usher worker` and `usher executor`
 * processes against a database of this file's own. Every assertion reads rows back from Postgres;
 * timestamps are compared inside SQL so their microseconds are never rounded to JS milliseconds.
 *
 * Tests run one after another and each starts from empty executions, lanes, policies and workers
 * (see beforeEach), so exact counts and totals hold per test.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker, type UsherProcess } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';
import { maxOverlap } from '../support/scenario.ts';

let t: TestDatabase;
/** Processes started by the current test, for their log lines when a wait times out. */
let procs: UsherProcess[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  // Policies reference actions: register the two test actions up front (a worker would do the same).
  await t.pool.query(`insert into usher.actions (ref) values ('t.work'), ('t.other') on conflict do nothing`);
});

afterAll(async () => {
  await killAll();
  await t?.drop();
});

beforeEach(async () => {
  procs = [];
  await t.pool.query('truncate usher.executions, usher.lanes, usher.policies, usher.workers');
});

afterEach(async () => {
  await killAll();
});

async function worker(options: { concurrency: number; name: string; env?: Record<string, string> }): Promise<UsherProcess> {
  const proc = await startWorker(t.url, options);
  procs.push(proc);
  return proc;
}

async function executor(env: Record<string, string> = {}): Promise<UsherProcess> {
  const proc = await startExecutor(t.url, env);
  procs.push(proc);
  return proc;
}

async function one<T = Record<string, unknown>>(sql: string, values: unknown[] = []): Promise<T> {
  const { rows } = await t.pool.query(sql, values);
  expect(rows, sql).toHaveLength(1);
  return rows[0] as T;
}

async function all<T = Record<string, unknown>>(sql: string, values: unknown[] = []): Promise<T[]> {
  return (await t.pool.query(sql, values)).rows as T[];
}

/**
 * waitFor on a database condition. On timeout the message carries what is needed to tell why:
 * the executions by status, the workers' heartbeats, every session of this database with what it
 * waits on, and each process's exit state and last log lines.
 */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  try {
    await waitFor(async () => (await check()) || undefined, { what, timeoutMs, intervalMs: 50 });
  } catch (error) {
    const report = async (sql: string) => JSON.stringify(await all(sql).catch((e: unknown) => String(e)));
    const executions = await report(
      `select action_ref, status, count(*)::int as n, min(id)::text as min_id, max(id)::text as max_id
       from usher.executions group by 1, 2 order by 1, 2`);
    const workers = await report(`select id::text, name, status, heartbeat_at, clock_timestamp() as now from usher.workers order by id`);
    const sessions = await report(
      `select pid, application_name, state, wait_event_type, wait_event, pg_blocking_pids(pid) as blocked_by,
         clock_timestamp() - xact_start as xact_age, left(query, 160) as query
       from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() order by application_name`);
    const logs = procs.map((proc) =>
      `[${proc.child.pid} exit=${proc.child.exitCode ?? proc.child.signalCode ?? 'alive'}]\n${proc.lines.slice(-15).join('\n')}`).join('\n---\n');
    throw new Error(`${(error as Error).message}\nexecutions: ${executions}\nworkers: ${workers}\nsessions: ${sessions}\nprocesses:\n${logs}`);
  }
}

/** Executions per status among those matching `where` (a condition on e). */
async function statusCounts(where: string, values: unknown[] = []): Promise<Record<string, number>> {
  const rows = await all<{ status: string; n: number }>(
    `select e.status, count(*)::int as n from usher.executions e where ${where} group by e.status order by e.status`,
    values,
  );
  return Object.fromEntries(rows.map((row) => [row.status, row.n]));
}

async function countWhere(where: string, values: unknown[] = []): Promise<number> {
  return (await one<{ n: number }>(`select count(*)::int as n from usher.executions e where ${where}`, values)).n;
}

/**
 * The most executions matching `where` that held a slot at one instant, each holding it over
 * [scheduled_at, completed_at). At equal timestamps a release is counted before an admission.
 */
function maxHolding(where: string, values: unknown[] = []): Promise<number> {
  return maxOverlap(t.pool, 'scheduled_at', 'completed_at', where, values);
}

/** Ids matching `where`, in id order and in admission order ((scheduled_at, id)). */
async function idAndAdmissionOrder(where: string, values: unknown[] = []): Promise<{ byId: string[]; byAdmission: string[] }> {
  const row = await one<{ by_id: string[] | null; by_admission: string[] | null }>(
    `select array_agg(e.id::text order by e.id) as by_id,
       array_agg(e.id::text order by e.scheduled_at, e.id) as by_admission
     from usher.executions e where ${where}`,
    values,
  );
  return { byId: row.by_id ?? [], byAdmission: row.by_admission ?? [] };
}

/** Pairs (in id order) where an execution was admitted before the one enqueued just before it. */
async function admittedBeforeOlder(where: string, values: unknown[] = []): Promise<{ id: string; previous: string }[]> {
  return all(
    `select id::text, previous::text from (
       select e.id, lag(e.id) over w as previous, e.scheduled_at, lag(e.scheduled_at) over w as previous_scheduled_at
       from usher.executions e where ${where}
       window w as (order by e.id)
     ) s
     where scheduled_at < previous_scheduled_at
     order by id`,
    values,
  );
}

/** Pairs (in id order) where an execution was admitted or started before the one just before it completed. */
async function serialBreaks(where: string, values: unknown[] = []): Promise<{ id: string; previous: string }[]> {
  return all(
    `select id::text, previous::text from (
       select e.id, e.scheduled_at, e.started_at,
         lag(e.id) over w as previous, lag(e.completed_at) over w as previous_completed_at
       from usher.executions e where ${where}
       window w as (order by e.id)
     ) s
     where previous is not null
       and (scheduled_at <= previous_completed_at or started_at < previous_completed_at)
     order by id`,
    values,
  );
}

async function invariants(): Promise<unknown[]> {
  return all('select lane_key, problem, detail from usher.check_invariants()');
}

async function lanes(): Promise<{ lane_key: string; active_count: number; total_admitted: number }[]> {
  return all('select lane_key, active_count, total_admitted::int as total_admitted from usher.lanes order by lane_key');
}

async function queueStats(actionRef: string): Promise<Record<string, unknown>> {
  return one(
    `select queue_length::int, active_count::int, max_concurrent, total_enqueued::int, total_completed::int
     from usher.queue_stats where action_ref = $1`,
    [actionRef],
  );
}

describe('FIFO admission under a threshold, with real worker and executor processes', () => {
  // About 15 s on an idle 2-core machine; the longer limits only matter when the machine is shared.
  it('admits 2,000 executions of one action in id order, never more than 3 holding a slot, with 3 workers and 2 executors', { timeout: 240_000 }, async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('fifo-2000', 't.work', 3)`);
    await Promise.all([executor(), executor()]);
    await Promise.all([1, 2, 3].map((i) => worker({ concurrency: 4, name: `bulk-${i}` })));

    // Enqueued after every process is up: the first admission comes from the executors' NOTIFY,
    // both racing for the lane, and from then on each completion admits the next.
    const inserted = await t.pool.query(
      `insert into usher.executions (action_ref, params)
       select 't.work', jsonb_build_object('n', g, 'ms', floor(random() * 6)::int) from generate_series(1, 2000) g`,
    );
    expect(inserted.rowCount).toBe(2000);

    await until('2000 completed executions', async () => (await countWhere(`e.status = 'completed'`)) === 2000, 200_000);

    expect(await statusCounts('true')).toEqual({ completed: 2000 });
    expect(await countWhere(`e.lane_key = 'action:t.work'`)).toBe(2000);
    const { byId, byAdmission } = await idAndAdmissionOrder(`e.action_ref = 't.work'`);
    expect(byId).toHaveLength(2000);
    expect(byAdmission).toEqual(byId);
    expect(await admittedBeforeOlder(`e.action_ref = 't.work'`)).toEqual([]);
    expect(await maxHolding(`e.action_ref = 't.work'`)).toBe(3);
    // The first admission filled exactly the 3 free slots, in one batch sharing one scheduled_at.
    expect(await all(`select id::text from usher.executions
       where scheduled_at = (select scheduled_at from usher.executions order by id limit 1) order by id`))
      .toEqual(byId.slice(0, 3).map((id) => ({ id })));
    // Each one admitted, then started, then ended, in that order.
    expect(await countWhere(`not (e.scheduled_at <= e.started_at and e.started_at <= e.completed_at)`)).toBe(0);
    expect(await queueStats('t.work')).toEqual({
      queue_length: 0, active_count: 0, max_concurrent: 3, total_enqueued: 2000, total_completed: 2000,
    });
    expect(await invariants()).toEqual([]);
    expect(await lanes()).toEqual([{ lane_key: 'action:t.work', active_count: 0, total_admitted: 2000 }]);
  });

  it('runs a threshold-1 lane strictly serially in id order, admitting the next promptly on completion rather than on the poll', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('fifo-serial', 't.work', 1)`);
    // A poll every 5 s: only NOTIFY and the in-transaction admission can make the gaps short.
    const slowPoll = { USHER_POLL_INTERVAL_MS: '5000' };
    await executor(slowPoll);
    await Promise.all([1, 2].map((i) => worker({ concurrency: 2, name: `serial-${i}`, env: slowPoll })));

    await t.pool.query(
      `insert into usher.executions (action_ref, params)
       select 't.work', jsonb_build_object('n', g, 'ms', 2) from generate_series(1, 100) g`,
    );
    await until('100 completed executions', async () => (await countWhere(`e.status = 'completed'`)) === 100);

    expect(await statusCounts('true')).toEqual({ completed: 100 });
    const { byId } = await idAndAdmissionOrder('true');
    const byStart = await one<{ ids: string[] }>(`select array_agg(id::text order by started_at, id) as ids from usher.executions`);
    expect(byStart.ids).toEqual(byId);
    expect(await serialBreaks('true')).toEqual([]);
    expect(await maxHolding('true')).toBe(1);

    const gaps = await one<{ median_ms: number; max_ms: number; n: number }>(
      `select percentile_cont(0.5) within group (order by gap_ms) as median_ms, max(gap_ms)::float8 as max_ms, count(*)::int as n
       from (
         select extract(epoch from started_at - lag(completed_at) over (order by id)) * 1000 as gap_ms
         from usher.executions
       ) s
       where gap_ms is not null`,
    );
    expect(gaps.n).toBe(99);
    expect(gaps.median_ms).toBeLessThan(500);
    // The first one was admitted by the executor on the insert's NOTIFY, well before its next poll.
    const firstAdmission = await one<{ ms: number }>(
      `select (extract(epoch from scheduled_at - created_at) * 1000)::float8 as ms from usher.executions order by id limit 1`);
    expect(firstAdmission.ms).toBeLessThan(2000);
    expect(await invariants()).toEqual([]);
    expect(await lanes()).toEqual([{ lane_key: 'action:t.work', active_count: 0, total_admitted: 100 }]);
  });

  it('keeps lanes of different actions independent: a blocked threshold-1 lane does not hold up another action, and drains in id order once the blocker is cancelled', async () => {
    await t.pool.query(`
      insert into usher.policies (ref, action_ref, threshold) values ('fifo-blocked', 't.work', 1), ('fifo-free', 't.other', 2)`);
    await executor();
    await Promise.all([1, 2].map((i) => worker({ concurrency: 2, name: `lanes-${i}` })));

    const blocker = await one<{ id: string }>(`insert into usher.executions (action_ref, params) values ('t.work', '{"n": 0, "ms": 60000}') returning id::text`);
    await t.pool.query(
      `insert into usher.executions (action_ref, params) select 't.work', jsonb_build_object('n', g, 'ms', 0) from generate_series(1, 5) g`,
    );
    await until('the blocker running', async () => (await statusCounts('e.id = $1', [blocker.id])).running === 1);
    await t.pool.query(
      `insert into usher.executions (action_ref, params) select 't.other', jsonb_build_object('n', g, 'ms', 10) from generate_series(1, 50) g`,
    );
    await until('50 completed t.other', async () => (await countWhere(`e.action_ref = 't.other' and e.status = 'completed'`)) === 50);

    // t.work is still stuck behind its blocker, which is still running.
    expect(await statusCounts(`e.action_ref = 't.work'`)).toEqual({ requested: 5, running: 1 });
    expect(await statusCounts('e.id = $1', [blocker.id])).toEqual({ running: 1 });
    expect(await statusCounts(`e.action_ref = 't.other'`)).toEqual({ completed: 50 });
    expect(await maxHolding(`e.action_ref = 't.other'`)).toBe(2);
    const other = await idAndAdmissionOrder(`e.action_ref = 't.other'`);
    expect(other.byAdmission).toEqual(other.byId);
    expect(await countWhere(`e.action_ref = 't.work' and e.id <> $1 and e.scheduled_at is not null`, [blocker.id])).toBe(0);
    expect(await invariants()).toEqual([]);

    expect(await all('select id::text, status, changed from usher.cancel_execution($1)', [blocker.id]))
      .toEqual([{ id: blocker.id, status: 'canceling', changed: true }]);
    await until('5 completed t.work', async () => (await countWhere(`e.action_ref = 't.work' and e.status = 'completed'`)) === 5);

    expect(await one(`select status, result, completed_at is not null as ended from usher.executions where id = $1`, [blocker.id]))
      .toEqual({ status: 'cancelled', result: { reason: 'cancelled by request' }, ended: true });
    const work = await all<{ n: number; status: string }>(
      `select (params->>'n')::int as n, status from usher.executions where action_ref = 't.work' order by started_at, id`,
    );
    expect(work).toEqual([0, 1, 2, 3, 4, 5].map((n) => ({ n, status: n === 0 ? 'cancelled' : 'completed' })));
    // Each one admitted and started only after the one before it (the blocker first) ended.
    expect(await serialBreaks(`e.action_ref = 't.work'`)).toEqual([]);
    expect(await maxHolding(`e.action_ref = 't.work'`)).toBe(1);
    expect(await invariants()).toEqual([]);
    expect(await lanes()).toEqual([
      { lane_key: 'action:t.other', active_count: 0, total_admitted: 50 },
      { lane_key: 'action:t.work', active_count: 0, total_admitted: 6 },
    ]);
  });

  describe('the narrowest enabled policy decides the lane, and a pack or global threshold counts across its scope', () => {
    async function runInterleaved(count: number, msOf: string): Promise<void> {
      await executor();
      await Promise.all([1, 2].map((i) => worker({ concurrency: 3, name: `scope-${i}` })));
      await t.pool.query(
        `insert into usher.executions (action_ref, params)
         select case when g % 2 = 1 then 't.work' else 't.other' end, jsonb_build_object('n', g, 'ms', ${msOf})
         from generate_series(1, $1::int) g`,
        [count],
      );
      await until(`${count} completed executions`, async () => (await countWhere(`e.status = 'completed'`)) === count);
      expect(await statusCounts('true')).toEqual({ completed: count });
    }

    it('a pack policy puts every action of the pack in one lane "pack:t", admitted in id order across actions, at most 2 at once', async () => {
      await t.pool.query(`insert into usher.policies (ref, pack_ref, threshold) values ('fifo-pack', 't', 2)`);
      await runInterleaved(200, '(g * 7) % 5');

      expect(await all('select action_ref, lane_key, count(*)::int as n from usher.executions group by 1, 2 order by 1')).toEqual([
        { action_ref: 't.other', lane_key: 'pack:t', n: 100 },
        { action_ref: 't.work', lane_key: 'pack:t', n: 100 },
      ]);
      const { byId, byAdmission } = await idAndAdmissionOrder('true');
      expect(byAdmission).toEqual(byId);
      expect(await admittedBeforeOlder('true')).toEqual([]);
      expect(await maxHolding('true')).toBe(2);
      expect(await maxHolding(`e.action_ref = 't.work'`)).toBeLessThanOrEqual(2);
      expect((await queueStats('t.work')).max_concurrent).toBe(2);
      expect((await queueStats('t.other')).max_concurrent).toBe(2);
      expect(await invariants()).toEqual([]);
      expect(await lanes()).toEqual([{ lane_key: 'pack:t', active_count: 0, total_admitted: 200 }]);
    });

    it('a global policy puts every action in one lane "global", admitted in id order across actions, at most 3 at once', async () => {
      await t.pool.query(`insert into usher.policies (ref, threshold) values ('fifo-global', 3)`);
      await runInterleaved(200, '(g * 7) % 5');

      expect(await all('select action_ref, lane_key, count(*)::int as n from usher.executions group by 1, 2 order by 1')).toEqual([
        { action_ref: 't.other', lane_key: 'global', n: 100 },
        { action_ref: 't.work', lane_key: 'global', n: 100 },
      ]);
      const { byId, byAdmission } = await idAndAdmissionOrder('true');
      expect(byAdmission).toEqual(byId);
      expect(await admittedBeforeOlder('true')).toEqual([]);
      expect(await maxHolding('true')).toBe(3);
      expect((await queueStats('t.work')).max_concurrent).toBe(3);
      expect(await invariants()).toEqual([]);
      expect(await lanes()).toEqual([{ lane_key: 'global', active_count: 0, total_admitted: 200 }]);
    });

    it('an action policy overrides the pack policy for its action: lane "action:t.work", whose slots do not count against "pack:t"', async () => {
      await t.pool.query(`
        insert into usher.policies (ref, pack_ref, threshold) values ('fifo-pack', 't', 2);
        insert into usher.policies (ref, action_ref, threshold) values ('fifo-work-only', 't.work', 1);`);
      await runInterleaved(40, '50');

      expect(await all('select action_ref, lane_key, count(*)::int as n from usher.executions group by 1, 2 order by 1')).toEqual([
        { action_ref: 't.other', lane_key: 'pack:t', n: 20 },
        { action_ref: 't.work', lane_key: 'action:t.work', n: 20 },
      ]);
      for (const action of ['t.work', 't.other']) {
        const { byId, byAdmission } = await idAndAdmissionOrder('e.action_ref = $1', [action]);
        expect(byAdmission, action).toEqual(byId);
      }
      expect(await serialBreaks(`e.action_ref = 't.work'`)).toEqual([]);
      expect(await maxHolding(`e.action_ref = 't.work'`)).toBe(1);
      expect(await maxHolding(`e.action_ref = 't.other'`)).toBe(2);
      // The two lanes run side by side: 1 + 2 slots at once.
      expect(await maxHolding('true')).toBe(3);
      expect((await queueStats('t.work')).max_concurrent).toBe(1);
      expect((await queueStats('t.other')).max_concurrent).toBe(2);
      expect(await invariants()).toEqual([]);
      expect(await lanes()).toEqual([
        { lane_key: 'action:t.work', active_count: 0, total_admitted: 20 },
        { lane_key: 'pack:t', active_count: 0, total_admitted: 20 },
      ]);
    });
  });

  it('applies a threshold change to waiting executions at once: raising admits the next ones together, lowering admits nothing until the lane is under it', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('fifo-limit', 't.work', 1)`);
    // A poll every 5 s: the raise must take effect through the policy change's NOTIFY, within the
    // first execution's 1.5 s, for the assertions below to hold.
    const slowPoll = { USHER_POLL_INTERVAL_MS: '5000' };
    await executor(slowPoll);
    await worker({ concurrency: 4, name: 'limit', env: slowPoll });

    // The first four run long enough that raising and lowering both happen while they hold slots.
    const ids = (await all<{ id: string }>(
      `insert into usher.executions (action_ref, params)
       select 't.work', jsonb_build_object('n', g, 'ms', case when g <= 4 then 1500 else 300 end) from generate_series(1, 20) g
       returning id::text`,
    )).map((row) => row.id);
    const [first, second, , fourth, fifth] = ids;

    await until('the first execution running', async () => (await statusCounts('e.id = $1', [first])).running === 1);
    expect(await statusCounts('true')).toEqual({ requested: 19, running: 1 });

    await t.pool.query(`update usher.policies set threshold = 4 where ref = 'fifo-limit'`);
    await until('4 executions holding a slot', async () =>
      (await countWhere(`e.status in ('scheduled', 'running', 'canceling')`)) === 4);
    // The raise admitted the next three in one batch while the first was still running.
    expect(await all(`select id::text, status in ('scheduled', 'running') as holding from usher.executions where scheduled_at is not null order by id`))
      .toEqual(ids.slice(0, 4).map((id) => ({ id, holding: true })));
    expect(await one(`select count(distinct scheduled_at)::int as batches from usher.executions where id between $1 and $2`, [second, fourth]))
      .toEqual({ batches: 1 });
    expect(await countWhere('e.id = $1 and e.completed_at is null', [first])).toBe(1);
    expect(await countWhere(`e.status = 'requested'`)).toBe(16);

    await t.pool.query(`update usher.policies set threshold = 1 where ref = 'fifo-limit'`);
    // Four holders over a threshold of 1 is no fault: they were admitted before it was lowered.
    expect(await invariants()).toEqual([]);
    await until('20 completed executions', async () => (await countWhere(`e.status = 'completed'`)) === 20);

    expect(await statusCounts('true')).toEqual({ completed: 20 });
    // The three admitted by the raise were admitted together, before the first one completed.
    expect(await one(
      `select bool_and(e.scheduled_at < f.completed_at) as before_first_completed, count(distinct e.scheduled_at)::int as batches
       from usher.executions e, usher.executions f where f.id = $1 and e.id between $2 and $3`,
      [first, second, fourth],
    )).toEqual({ before_first_completed: true, batches: 1 });
    // After the lowering, the fifth waited until all four holders were gone (the lane under 1).
    expect(await one(
      `select f.scheduled_at > (select max(completed_at) from usher.executions where id between $1 and $2) as after_all_four
       from usher.executions f where f.id = $3`,
      [first, fourth, fifth],
    )).toEqual({ after_all_four: true });
    // From the fifth on the lane ran serially in id order.
    expect(await serialBreaks('e.id >= $1', [fifth])).toEqual([]);
    expect(await maxHolding('e.id >= $1', [fifth])).toBe(1);
    expect(await maxHolding('true')).toBe(4);
    const byStart = await one<{ ids: string[] }>(`select array_agg(id::text order by started_at, id) as ids from usher.executions where id >= $1`, [fifth]);
    expect(byStart.ids).toEqual(ids.slice(4));
    const { byId, byAdmission } = await idAndAdmissionOrder('true');
    expect(byAdmission).toEqual(byId);
    expect(await invariants()).toEqual([]);
    expect(await lanes()).toEqual([{ lane_key: 'action:t.work', active_count: 0, total_admitted: 20 }]);
  });
});
