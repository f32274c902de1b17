/**
 * Recovery from processes that die or freeze: a worker killed with SIGKILL, executors killed and
 * restarted (and running two at once), and a frozen worker whose lease is taken away (fencing).
 * Real Postgres, real `usher worker` / `usher executor` processes; every wait is on a database
 * condition or a log line.
 */
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker, type UsherProcess } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';
import { TcpProxy, throughProxy } from '../support/proxy.ts';
import { endLeftovers, events, eventsWhenLogged, parseLine, usePolicy, workerIdOf, type Row } from '../support/scenario.ts';

let t: TestDatabase;

const LEASE_SECONDS = 2;
const shortLease = { USHER_LEASE_SECONDS: String(LEASE_SECONDS) };

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`insert into usher.actions (ref) values ('t.work'), ('t.other') on conflict do nothing`);
});

afterEach(async () => {
  await killAll();
  await endLeftovers(t.pool);
});

afterAll(() => t.drop());

async function q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T[]> {
  return (await t.pool.query<T>(sql, values)).rows;
}

/** Enqueues one execution per params object, ids in the order given. */
async function enqueue(action: string, params: Row[]): Promise<{ id: string; lane_key: string | null; status: string }[]> {
  return q(
    `insert into usher.executions (action_ref, params)
     select $1, p.value from jsonb_array_elements($2::jsonb) with ordinality as p (value, ord) order by p.ord
     returning id, lane_key, status`,
    [action, JSON.stringify(params)],
  );
}

function statusCounts(laneKey: string): Promise<Row[]> {
  return q(`select status, count(*)::int as n from usher.executions where lane_key = $1 group by status order by status`, [laneKey]);
}

/**
 * Watches a lane from its own connection until stopped: the most executions ever seen holding a
 * slot at once, and the highest lanes.active_count.
 */
async function watchSlots(laneKey: string): Promise<{ stop(): Promise<{ maxHolders: number; maxCounted: number; samples: number }> }> {
  const client: pg.Client = await t.connect();
  let stopping = false;
  let maxHolders = 0;
  let maxCounted = 0;
  let samples = 0;
  let failure: unknown;
  const loop = (async () => {
    while (!stopping) {
      const { rows } = await client.query<{ holders: number; counted: number }>(
        `select (select count(*)::int from usher.executions
                 where lane_key = $1 and status in ('scheduled', 'running', 'canceling')) as holders,
                coalesce((select active_count from usher.lanes where lane_key = $1), 0) as counted`,
        [laneKey],
      );
      maxHolders = Math.max(maxHolders, rows[0]!.holders);
      maxCounted = Math.max(maxCounted, rows[0]!.counted);
      samples += 1;
      // Pacing only: the sampler must not starve the processes under test of CPU.
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
  })().catch((error: unknown) => {
    // A test that failed early drops the database under the sampler: end quietly, report on stop().
    failure = error;
  });
  return {
    async stop() {
      stopping = true;
      await loop;
      if (failure) throw failure;
      return { maxHolders, maxCounted, samples };
    },
  };
}

describe('a worker killed with SIGKILL mid-run', () => {
  it('has its executions abandoned when the lease expires, its slots given to the next in line, and itself marked lost', async () => {
    await usePolicy(t.pool, 't.work', 'recovery-kill9', 2);
    const executor = await startExecutor(t.url, shortLease);
    const victim = await startWorker(t.url, { concurrency: 4, name: 'victim', env: shortLease });
    const victimId = workerIdOf(victim);

    const long = await enqueue('t.work', [1, 2].map((n) => ({ lane: 'kill9', n, ms: 60_000 })));
    const short = await enqueue('t.work', Array.from({ length: 10 }, (_, i) => ({ lane: 'kill9', n: 100 + i, ms: 20 })));
    const laneKey = long[0]!.lane_key!;
    expect(laneKey).toBe('action:t.work#["kill9"]');
    const longIds = long.map((row) => row.id);
    const shortIds = short.map((row) => row.id);

    await waitFor(async () => {
      const rows = await q(`select id from usher.executions where id = any($1) and status = 'running' and worker_id = $2`, [longIds, victimId]);
      return rows.length === 2;
    }, { what: 'both long executions running on the victim' });
    expect(await statusCounts(laneKey)).toEqual([{ status: 'requested', n: 10 }, { status: 'running', n: 2 }]);

    victim.kill('SIGKILL');
    const killedAt = Date.now();
    expect(await victim.exited).toEqual({ code: null, signal: 'SIGKILL' });

    await waitFor(async () => {
      const rows = await q(`select id from usher.executions where id = any($1) and status = 'abandoned'`, [longIds]);
      return rows.length === 2;
    }, { what: 'the killed worker\'s executions abandoned', intervalMs: 10 });
    const recoveryMs = Date.now() - killedAt;
    console.info(`recovery after SIGKILL: ${recoveryMs} ms (lease ${LEASE_SECONDS} s)`);
    expect(recoveryMs).toBeLessThanOrEqual(2 * LEASE_SECONDS * 1000 + 2000);

    const abandoned = await q(
      `select id, status, error, attempt, worker_id, result, lease_token, lease_expires_at, completed_at is not null as ended
       from usher.executions where id = any($1) order by id`,
      [longIds],
    );
    expect(abandoned).toEqual(longIds.map((id) => ({
      id,
      status: 'abandoned',
      error: `lease expired: worker ${victimId} stopped renewing it`,
      attempt: 1,
      worker_id: victimId,
      result: null,
      lease_token: null,
      lease_expires_at: null,
      ended: true,
    })));

    // The sweep that abandoned them released their slots and admitted the two oldest waiting, in
    // the same transaction; with no worker left they wait, admitted, for one.
    const afterSweep = await q(`select id, status from usher.executions where id = any($1) order by id`, [shortIds]);
    expect(afterSweep).toEqual(shortIds.map((id, i) => ({ id, status: i < 2 ? 'scheduled' : 'requested' })));
    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [laneKey]))
      .toEqual([{ active_count: 2, total_admitted: 4 }]);
    await waitFor(() => events(executor, 'sweep:expired').reduce((sum, line) => sum + Number(line.count), 0) >= 2, { what: 'the sweep logged' });
    expect(events(executor, 'sweep:expired').reduce((sum, line) => sum + Number(line.count), 0)).toBe(2);

    const rescuer = await startWorker(t.url, { concurrency: 1, name: 'rescuer', env: shortLease });
    const rescuerId = workerIdOf(rescuer);
    await waitFor(async () => {
      const rows = await q(`select count(*)::int as n from usher.executions where id = any($1) and status = 'completed'`, [shortIds]);
      return rows[0]!.n === 10;
    }, { what: 'all queued executions completed' });

    const done = await q(
      `select id, status, attempt, worker_id, result->'n' as n from usher.executions where id = any($1) order by completed_at, id`,
      [shortIds],
    );
    expect(done).toEqual(shortIds.map((id, i) => ({ id, status: 'completed', attempt: 1, worker_id: rescuerId, n: 100 + i })));
    const admissionOrder = await q(`select id from usher.executions where lane_key = $1 order by scheduled_at, id`, [laneKey]);
    expect(admissionOrder.map((row) => row.id)).toEqual([...longIds, ...shortIds]);

    await waitFor(async () => (await q('select status from usher.workers where id = $1', [victimId]))[0]!.status === 'lost',
      { what: 'the killed worker marked lost' });
    const workers = await q(
      `select name, status, stopped_at is not null as stopped from usher.workers where id = any($1) order by id`,
      [[victimId, rescuerId]],
    );
    expect(workers).toEqual([
      { name: 'victim', status: 'lost', stopped: true },
      { name: 'rescuer', status: 'active', stopped: false },
    ]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [laneKey]))
      .toEqual([{ active_count: 0, total_admitted: 12 }]);
    expect(await statusCounts(laneKey)).toEqual([{ status: 'abandoned', n: 2 }, { status: 'completed', n: 10 }]);
  });
});

describe('executors killed, restarted and running side by side', () => {
  it('runs 500 executions exactly once each, admitted in id order, while one of two executors is killed and replaced', async () => {
    await usePolicy(t.pool, 't.other', 'recovery-executors', 3);
    const first = await startExecutor(t.url);
    await startExecutor(t.url);
    const workers = [
      await startWorker(t.url, { concurrency: 2, name: 'busy-1' }),
      await startWorker(t.url, { concurrency: 2, name: 'busy-2' }),
    ];
    const workerIds = workers.map(workerIdOf);

    const firstBatch = await enqueue('t.other', Array.from({ length: 300 }, (_, i) => ({ lane: 'executors', n: i })));
    const laneKey = firstBatch[0]!.lane_key!;
    const slots = await watchSlots(laneKey);
    const completed = async () =>
      (await q(`select count(*)::int as n from usher.executions where lane_key = $1 and status = 'completed'`, [laneKey]))[0]!.n as number;

    await waitFor(async () => (await completed()) >= 100, { what: '100 completed' });
    first.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    const replacement = await startExecutor(t.url);

    // Once the lane has drained, a new batch can only be admitted by an executor.
    await waitFor(async () => (await completed()) === 300, { what: 'the first 300 completed' });
    expect(await q('select active_count from usher.lanes where lane_key = $1', [laneKey])).toEqual([{ active_count: 0 }]);
    await enqueue('t.other', Array.from({ length: 200 }, (_, i) => ({ lane: 'executors', n: 300 + i })));
    await waitFor(async () => (await completed()) === 500, { what: 'all 500 completed' });
    const watched = await slots.stop();

    expect(replacement.child.exitCode).toBeNull();
    expect(await statusCounts(laneKey)).toEqual([{ status: 'completed', n: 500 }]);
    const rows = await q(
      `select id, attempt, worker_id, (params->>'n')::int as n, (result->>'n')::int as result_n
       from usher.executions where lane_key = $1 order by id`,
      [laneKey],
    );
    expect(rows.map((row) => row.n)).toEqual(Array.from({ length: 500 }, (_, i) => i));
    expect(rows.filter((row) => row.attempt !== 1 || row.result_n !== row.n || !workerIds.includes(row.worker_id))).toEqual([]);

    // Each execution ran once: one completion logged for it, by one worker.
    const completions = () => workers.flatMap((worker) => events(worker, 'execution:completed').map((line) => String(line.execution_id)));
    await waitFor(() => completions().length >= 500, { what: '500 completions logged', timeoutMs: 10_000 });
    const logged = completions();
    expect(logged).toHaveLength(500);
    expect(new Set(logged).size).toBe(500);
    expect([...logged].sort()).toEqual(rows.map((row) => row.id).sort());
    for (const worker of workers) expect(events(worker, 'execution:mark_fenced')).toEqual([]);

    const admissionOrder = await q(`select id from usher.executions where lane_key = $1 order by scheduled_at, id`, [laneKey]);
    expect(admissionOrder.map((row) => row.id)).toEqual(rows.map((row) => row.id));
    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [laneKey]))
      .toEqual([{ active_count: 0, total_admitted: 500 }]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
    expect(watched.samples).toBeGreaterThan(10);
    expect(watched.maxHolders).toBeLessThanOrEqual(3);
    expect(watched.maxCounted).toBeLessThanOrEqual(3);
  });
});

describe('split brain: a frozen worker outlives its lease', () => {
  it('has its execution abandoned and its slot handed on, and never overwrites it when it wakes', async () => {
    await usePolicy(t.pool, 't.work', 'recovery-fencing', 1);
    await startExecutor(t.url, shortLease);
    // At debug level the worker logs execution:started just before it calls the handler.
    const stale = await startWorker(t.url, { concurrency: 2, name: 'stale', env: { ...shortLease, USHER_LOG_LEVEL: 'debug' } });
    const staleId = workerIdOf(stale);

    const [x, y] = await enqueue('t.work', [
      { lane: 'fencing', n: 'x', ms: 3000 },
      { lane: 'fencing', n: 'y', ms: 2000 },
    ]);
    const laneKey = x!.lane_key!;
    const slots = await watchSlots(laneKey);
    await waitFor(() => events(stale, 'execution:started').some((line) => line.execution_id === x!.id),
      { what: 'x\'s handler started on the stale worker', intervalMs: 5 });
    // A heartbeat has renewed x's lease since the claim: the worker has run on past the call of the
    // handler, so its 3 s timer is set.
    await waitFor(async () => (await q(
      `select lease_expires_at > started_at + make_interval(secs => $2 + 0.05) as renewed from usher.executions where id = $1`,
      [x!.id, LEASE_SECONDS],
    ))[0]!.renewed, { what: 'x\'s lease renewed by a heartbeat', intervalMs: 10 });
    // Frozen mid-run, well before x's handler is done.
    stale.kill('SIGSTOP');
    expect(await q('select id, status, worker_id from usher.executions where lane_key = $1 order by id', [laneKey])).toEqual([
      { id: x!.id, status: 'running', worker_id: staleId },
      { id: y!.id, status: 'requested', worker_id: null },
    ]);
    await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [x!.id]))[0]!.status === 'abandoned',
      { what: 'x abandoned while its worker is frozen', timeoutMs: 15_000 });
    const abandoned = (await q('select status, error, result, attempt, worker_id, completed_at from usher.executions where id = $1', [x!.id]))[0]!;
    expect(abandoned).toMatchObject({
      status: 'abandoned',
      error: `lease expired: worker ${staleId} stopped renewing it`,
      result: null,
      attempt: 1,
      worker_id: staleId,
    });
    expect(await q('select status from usher.executions where id = $1', [y!.id])).toEqual([{ status: 'scheduled' }]);

    const fresh = await startWorker(t.url, { concurrency: 2, name: 'fresh', env: shortLease });
    const freshId = workerIdOf(fresh);
    await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [y!.id]))[0]!.status === 'running',
      { what: 'y running on the fresh worker' });

    // x's handler is due to have finished by now (its 3 s timer started when execution:started was
    // logged). On SIGCONT that timer fires in the same turn of the event loop as the overdue
    // heartbeat, before the heartbeat can be answered, so the stale worker reports a completion
    // with its old lease token, and the database must refuse it.
    const handlerStartedAt = Date.parse(String(events(stale, 'execution:started').find((line) => line.execution_id === x!.id)!.ts));
    await waitFor(() => Date.now() > handlerStartedAt + 3000 + 500, { what: 'x\'s handler overdue' });
    stale.kill('SIGCONT');
    const refused = await waitFor(
      () => stale.lines.map(parseLine).find((line) => line?.event === 'execution:mark_fenced' || line?.event === 'execution:lease_lost'),
      { what: 'the stale worker to find its lease gone' },
    );
    // Either the worker sees on waking that its last renewal is older than the lease allows and
    // gives up (lease_lost), or its completion reaches the database and is refused there
    // (mark_fenced). Which comes first depends on its timers; the row must be untouched either way.
    // (The database's refusal of a stale token on its own is tested in test/sql/admission.test.ts.)
    expect(refused, stale.lines.slice(-30).join('\n')).toMatchObject({ execution_id: x!.id, worker_id: staleId });
    await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [y!.id]))[0]!.status === 'completed',
      { what: 'y completed' });
    const watched = await slots.stop();

    expect((await q('select status, error, result, attempt, worker_id, completed_at from usher.executions where id = $1', [x!.id]))[0])
      .toEqual(abandoned);
    expect(await q('select id, status, attempt, worker_id from usher.executions where lane_key = $1 order by id', [laneKey])).toEqual([
      { id: x!.id, status: 'abandoned', attempt: 1, worker_id: staleId },
      { id: y!.id, status: 'completed', attempt: 1, worker_id: freshId },
    ]);
    expect(events(stale, 'execution:completed')).toEqual([]);
    expect(stale.child.exitCode).toBeNull();
    expect(watched.maxHolders).toBe(1);
    expect(watched.maxCounted).toBe(1);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [laneKey]))
      .toEqual([{ active_count: 0, total_admitted: 2 }]);
  });
});

describe('a worker cut off from the database', () => {
  it('stops its handler when its lease can no longer be renewed, while the execution is abandoned and its slot handed on', async () => {
    await usePolicy(t.pool, 't.work', 'recovery-cutoff', 1);
    const target = new URL(t.url);
    const proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
    const proxied = throughProxy(t.url, await proxy.listen());
    try {
      await startExecutor(t.url, shortLease);
      const cutOff = await startWorker(proxied, { concurrency: 1, name: 'cut-off', env: shortLease });
      const [x, y] = await enqueue('t.work', [{ lane: 'cutoff', n: 'x', ms: 60_000 }, { lane: 'cutoff', n: 'y', ms: 10 }]);
      await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [x!.id]))[0]!.status === 'running',
        { what: 'x to run on the worker behind the proxy' });

      const cutAt = Date.now();
      proxy.blackhole();
      const lost = (await waitFor(() => events(cutOff, 'execution:lease_lost').find((line) => line.execution_id === x!.id),
        { what: 'the cut-off worker to give up x', timeoutMs: 15_000 }))!;
      // It gave up within about one lease of losing the database, not whenever the handler would have ended.
      expect(Date.parse(String(lost.ts)) - cutAt).toBeLessThan(LEASE_SECONDS * 1000 + 1500);

      const abandoned = await waitFor(async () => (await q(
        `select status, error from usher.executions where id = $1 and status = 'abandoned'`, [x!.id]))[0],
      { what: 'x to be abandoned' });
      expect(abandoned.error).toMatch(/^lease expired: worker \d+ stopped renewing it$/);
      await startWorker(t.url, { concurrency: 1, name: 'healthy', env: shortLease });
      await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [y!.id]))[0]!.status === 'completed',
        { what: 'y to complete on the healthy worker' });
      expect(events(cutOff, 'execution:completed')).toEqual([]);
      expect(await q('select * from usher.check_invariants()')).toEqual([]);
    } finally {
      await killAll();
      await proxy.close();
    }
  });
});

describe('a worker whose execution row another session keeps locked', () => {
  it('counts its lease from the last renewal that took, stops the handler in time, and runs the next once the lock is gone', async () => {
    await usePolicy(t.pool, 't.work', 'recovery-locked-row', 1);
    await startExecutor(t.url, shortLease);
    const worker = await startWorker(t.url, { concurrency: 1, name: 'locked-out', env: shortLease });
    const [x, y] = await enqueue('t.work', [{ lane: 'locked', n: 'x', ms: 60_000 }, { lane: 'locked', n: 'y', ms: 10 }]);
    await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [x!.id]))[0]!.status === 'running',
      { what: 'x to run' });

    // Heartbeats answer x as held but not renewed while the row is locked; the worker must not
    // take such an answer for a renewal, or its handler would run on past the database's lease.
    const locker = await t.connect();
    await locker.query('begin');
    await locker.query('select 1 from usher.executions where id = $1 for update', [x!.id]);
    const lockedAt = Date.now();
    try {
      const lost = (await waitFor(() => events(worker, 'execution:lease_lost').find((line) => line.execution_id === x!.id),
        { what: 'the worker to give up x', timeoutMs: 15_000 }))!;
      expect(Date.parse(String(lost.ts)) - lockedAt).toBeLessThan(LEASE_SECONDS * 1000 + 1500);
      expect(events(worker, 'heartbeat:failed')).toEqual([]);
    } finally {
      await locker.query('commit');
    }

    await waitFor(async () => (await q(`select status from usher.executions where id = $1`, [y!.id]))[0]!.status === 'completed',
      { what: 'y to complete on the same worker' });
    expect(await q('select id, status, attempt from usher.executions where id = any($1) order by id', [[x!.id, y!.id]])).toEqual([
      { id: x!.id, status: 'abandoned', attempt: 1 },
      { id: y!.id, status: 'completed', attempt: 1 },
    ]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
  });
});
