/**
 * What a worker does with the executions it runs: timeouts, cancels, handlers that throw or return
 * what cannot be stored, and graceful shutdown. Real Postgres, real `usher worker` /
 * `usher executor` processes; every wait is on a database condition or a log line.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker, type UsherProcess } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';
import { endLeftovers, events, eventsWhenLogged, usePolicy, workerIdOf, type Row } from '../support/scenario.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`insert into usher.actions (ref) values ('t.work'), ('t.other'), ('t.hang'), ('t.handoff'), ('t.unstorable') on conflict do nothing`);
});

afterEach(async () => {
  await killAll();
  await endLeftovers(t.pool);
});

afterAll(() => t.drop());

const terminal = ['completed', 'failed', 'cancelled', 'timeout', 'abandoned'];

async function q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T[]> {
  return (await t.pool.query<T>(sql, values)).rows;
}

async function enqueue(action: string, params: Row, timeoutSeconds?: number): Promise<{ id: string; lane_key: string | null; status: string }> {
  const rows = await q<{ id: string; lane_key: string | null; status: string }>(
    `insert into usher.executions (action_ref, params, timeout_seconds) values ($1, $2, $3) returning id, lane_key, status`,
    [action, JSON.stringify(params), timeoutSeconds ?? null],
  );
  return rows[0]!;
}

async function execution(id: string): Promise<Row> {
  const rows = await q(
    `select id, status, error, result, attempt, worker_id, lease_token, started_at, completed_at, scheduled_at,
       extract(epoch from completed_at - started_at)::float8 as run_seconds
     from usher.executions where id = $1`,
    [id],
  );
  return rows[0]!;
}

function waitForStatus(id: string, status: string | string[], timeoutMs = 30_000): Promise<Row> {
  const wanted = typeof status === 'string' ? [status] : status;
  return waitFor(async () => {
    const row = await execution(id);
    return wanted.includes(row.status) ? row : undefined;
  }, { what: `execution ${id} to be ${wanted.join(' or ')}`, timeoutMs });
}

function waitForEnd(id: string, timeoutMs = 30_000): Promise<Row> {
  return waitForStatus(id, terminal, timeoutMs);
}

async function cancel(id: string, reason?: string): Promise<Row[]> {
  return q('select * from usher.cancel_execution($1, $2)', [id, reason ?? null]);
}

describe('timeout', () => {
  it('aborts a handler past timeout_seconds, ends it timeout and hands its slot to the next; a handler that ignores the abort too', async () => {
    await usePolicy(t.pool, 't.work', 'behaviour-timeout', 1);
    await startExecutor(t.url);
    const worker = await startWorker(t.url, { concurrency: 2, name: 'timekeeper', env: { USHER_ABORT_GRACE_SECONDS: '1' } });
    const workerId = workerIdOf(worker);

    const slow = await enqueue('t.work', { lane: 'timeout', n: 'slow', ms: 30_000 }, 1);
    const next = await enqueue('t.work', { lane: 'timeout', n: 'next' });
    expect(slow.lane_key).toBe('action:t.work#["timeout"]');

    const timedOut = await waitForEnd(slow.id, 10_000);
    expect(timedOut).toMatchObject({
      status: 'timeout',
      error: 'ran past timeout_seconds = 1',
      result: null,
      attempt: 1,
      worker_id: workerId,
      lease_token: null,
    });
    // The worker stops it itself, right at the limit (the executor's sweep would wait for a whole lease more).
    expect(timedOut.run_seconds).toBeGreaterThanOrEqual(1);
    expect(timedOut.run_seconds).toBeLessThan(4);

    const after = await waitForEnd(next.id);
    expect(after).toMatchObject({ status: 'completed', result: { n: 'next', pid: worker.child.pid }, worker_id: workerId });
    expect(after.scheduled_at.getTime()).toBeGreaterThanOrEqual(timedOut.completed_at.getTime());
    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [slow.lane_key]))
      .toEqual([{ active_count: 0, total_admitted: 2 }]);

    // A handler that never settles and ignores its abort: timeout after timeout_seconds plus
    // USHER_ABORT_GRACE_SECONDS, and the worker lets go of it.
    const stuck = await enqueue('t.hang', {}, 1);
    const ended = await waitForEnd(stuck.id, 10_000);
    expect(ended).toMatchObject({ status: 'timeout', error: 'ran past timeout_seconds = 1', result: null, attempt: 1, worker_id: workerId });
    expect(ended.run_seconds).toBeGreaterThanOrEqual(2);
    expect(ended.run_seconds).toBeLessThan(5);
    expect((await eventsWhenLogged(worker, 'execution:timeout', 2)).map((line) => line.execution_id)).toEqual([slow.id, stuck.id]);

    // The stuck handler no longer takes one of the worker's two places: two enqueued together are
    // claimed together and run side by side.
    const afterwards = await q<{ id: string }>(
      `insert into usher.executions (action_ref, params) values ('t.other', '{"n": 1, "ms": 300}'), ('t.other', '{"n": 2, "ms": 300}') returning id`,
    );
    const done = await Promise.all(afterwards.map((row) => waitForEnd(row.id)));
    expect(done.map((row) => [row.status, row.worker_id, row.result])).toEqual([
      ['completed', workerId, { n: 1, pid: worker.child.pid }],
      ['completed', workerId, { n: 2, pid: worker.child.pid }],
    ]);
    expect(done[1]!.started_at.getTime()).toBeLessThan(done[0]!.completed_at.getTime());
    expect(worker.child.exitCode).toBeNull();
    expect(await q('select status from usher.workers where id = $1', [workerId])).toEqual([{ status: 'active' }]);
  });
});

describe('cancel', () => {
  it('ends a waiting execution at once, stops a running one through its worker, and leaves a finished one alone', async () => {
    await usePolicy(t.pool, 't.work', 'behaviour-cancel', 1);
    await startExecutor(t.url);
    const worker = await startWorker(t.url, { concurrency: 2, name: 'canceller' });
    const workerId = workerIdOf(worker);

    const running = await enqueue('t.work', { lane: 'cancel', n: 'a', ms: 60_000 });
    const [b, c, d] = [
      await enqueue('t.work', { lane: 'cancel', n: 'b', ms: 200 }),
      await enqueue('t.work', { lane: 'cancel', n: 'c' }),
      await enqueue('t.work', { lane: 'cancel', n: 'd' }),
    ];
    const laneKey = running.lane_key!;
    await waitForStatus(running.id, 'running');
    expect(await q(`select id, status from usher.executions where lane_key = $1 order by id`, [laneKey])).toEqual([
      { id: running.id, status: 'running' },
      { id: b!.id, status: 'requested' },
      { id: c!.id, status: 'requested' },
      { id: d!.id, status: 'requested' },
    ]);

    // Waiting: cancelled on the spot; it held no slot, so nothing else moves.
    expect(await cancel(c!.id)).toEqual([{ id: c!.id, status: 'cancelled', changed: true }]);
    expect(await execution(c!.id)).toMatchObject({
      status: 'cancelled', result: { reason: 'cancelled by request' }, error: null, attempt: 0, worker_id: null, started_at: null,
    });
    expect((await execution(c!.id)).completed_at).toBeInstanceOf(Date);
    expect(await q(`select id, status from usher.executions where lane_key = $1 order by id`, [laneKey])).toEqual([
      { id: running.id, status: 'running' },
      { id: b!.id, status: 'requested' },
      { id: c!.id, status: 'cancelled' },
      { id: d!.id, status: 'requested' },
    ]);
    expect(await q('select active_count from usher.lanes where lane_key = $1', [laneKey])).toEqual([{ active_count: 1 }]);

    // Running: canceling until the worker has aborted the handler, then cancelled; the slot goes to b.
    const cancelAsked = Date.now();
    expect(await cancel(running.id, 'test: stop a')).toEqual([{ id: running.id, status: 'canceling', changed: true }]);
    const cancelled = await waitForEnd(running.id, 10_000);
    const cancelMs = Date.now() - cancelAsked;
    expect(cancelled).toMatchObject({
      status: 'cancelled',
      result: { reason: 'test: stop a' },
      error: 'aborted by cancel',
      attempt: 1,
      worker_id: workerId,
      lease_token: null,
    });
    expect(cancelled.completed_at).toBeInstanceOf(Date);
    // The worker hears of it by NOTIFY, not at its next heartbeat (10 s with the default lease).
    expect(cancelMs).toBeLessThan(5000);
    expect((await eventsWhenLogged(worker, 'execution:cancelled', 1)).map((line) => line.execution_id)).toEqual([running.id]);

    const [doneB, doneD] = [await waitForEnd(b!.id), await waitForEnd(d!.id)];
    expect([doneB.status, doneD.status]).toEqual(['completed', 'completed']);
    expect(doneB.scheduled_at.getTime()).toBeGreaterThanOrEqual(cancelled.completed_at.getTime());
    expect(doneD.scheduled_at.getTime()).toBeGreaterThanOrEqual(doneB.completed_at.getTime());
    const runOrder = await q(`select id from usher.executions where lane_key = $1 and started_at is not null order by started_at`, [laneKey]);
    expect(runOrder.map((row) => row.id)).toEqual([running.id, b!.id, d!.id]);

    // Already finished: nothing changes, and the answer says what it is.
    expect(await cancel(b!.id)).toEqual([{ id: b!.id, status: 'completed', changed: false }]);
    expect(await cancel(c!.id)).toEqual([{ id: c!.id, status: 'cancelled', changed: false }]);
    expect(await cancel('999999999')).toEqual([]);
    expect(await execution(b!.id)).toMatchObject({ status: 'completed', result: { n: 'b', pid: worker.child.pid } });

    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [laneKey]))
      .toEqual([{ active_count: 0, total_admitted: 3 }]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
  });
});

describe('handler failures', () => {
  it('ends throws and unstorable results as failed with a clear error, and the worker carries on', async () => {
    // No policy governs these actions: they are admitted on insert and need no executor.
    const worker = await startWorker(t.url, { concurrency: 2, name: 'failures' });
    const workerId = workerIdOf(worker);

    const typeError = await enqueue('t.fail', { message: 'boom' });
    const thrownString = await enqueue('t.fail', { throw: 'string' });
    const thrownObject = await enqueue('t.fail', { throw: 'object' });
    const cycle = await enqueue('t.unstorable', { kind: 'cycle' });
    const bigint = await enqueue('t.unstorable', { kind: 'bigint' });
    const nul = await enqueue('t.unstorable', { kind: 'nul' });
    const all = [typeError, thrownString, thrownObject, cycle, bigint, nul];
    const ended = await Promise.all(all.map((row) => waitForEnd(row.id)));

    for (const row of ended) expect(row).toMatchObject({ status: 'failed', attempt: 1, worker_id: workerId, lease_token: null });
    const [e1, e2, e3, e4, e5, e6] = ended as [Row, Row, Row, Row, Row, Row];
    expect([e1.error, e1.result]).toEqual(['TypeError: boom', { error: { name: 'TypeError', message: 'boom' } }]);
    expect([e2.error, e2.result]).toEqual([
      'NonErrorThrown: plain string thrown',
      { error: { name: 'NonErrorThrown', message: 'plain string thrown' } },
    ]);
    expect([e3.error, e3.result]).toEqual([
      'NonErrorThrown: {"code":42,"why":"object thrown"}',
      { error: { name: 'NonErrorThrown', message: '{"code":42,"why":"object thrown"}' } },
    ]);
    expect(e4.error).toMatch(/^ResultNotStorable: the handler's return value is not JSON-serialisable: Converting circular structure to JSON/);
    expect(e4.result).toEqual({ error: { name: 'ResultNotStorable', message: e4.error.slice('ResultNotStorable: '.length) } });
    expect(e5.error).toBe("ResultNotStorable: the handler's return value is not JSON-serialisable: Do not know how to serialize a BigInt");
    expect(e5.result).toEqual({ error: { name: 'ResultNotStorable', message: e5.error.slice('ResultNotStorable: '.length) } });
    expect(e6.error).toBe("ResultNotStorable: the handler's return value contains the character U+0000, which Postgres jsonb cannot store");
    expect(e6.result).toEqual({ error: { name: 'ResultNotStorable', message: e6.error.slice('ResultNotStorable: '.length) } });

    expect((await eventsWhenLogged(worker, 'execution:failed', 6)).map((line) => line.execution_id).sort()).toEqual(all.map((row) => row.id).sort());
    expect(events(worker, 'worker:mark_impossible')).toEqual([]);

    const normal = await enqueue('t.other', { n: 'after failures' });
    expect(await waitForEnd(normal.id)).toMatchObject({
      status: 'completed', result: { n: 'after failures', pid: worker.child.pid }, worker_id: workerId, attempt: 1,
    });
    expect(worker.child.exitCode).toBeNull();
    expect(await q('select status from usher.workers where id = $1', [workerId])).toEqual([{ status: 'active' }]);
  });
});

describe('batched completions', () => {
  it('completes handlers that return together in one transaction; a result jsonb cannot store fails alone', async () => {
    // Enqueued before the worker starts, so one claim takes all ten and their handlers return in the same turn.
    const rows = await q<{ id: string; action_ref: string }>(
      `insert into usher.executions (action_ref, params)
       select case when g = 5 then 't.unstorable' else 't.other' end,
         case when g = 5 then '{"kind": "nul"}'::jsonb else jsonb_build_object('n', g) end
       from generate_series(1, 10) g
       returning id, action_ref`,
    );
    const worker = await startWorker(t.url, { concurrency: 10, name: 'batches' });
    const ended = await Promise.all(rows.map((row) => waitForEnd(row.id)));

    const completed = ended.filter((row) => row.status === 'completed');
    expect(completed.map((row) => row.result)).toEqual(
      rows.filter((row) => row.action_ref === 't.other').map((_, index) => ({ n: index < 4 ? index + 1 : index + 2, pid: worker.child.pid })),
    );
    // One batch: a completion writes its transaction's timestamp, so all nine share one.
    expect(new Set(completed.map((row) => (row.completed_at as Date).getTime())).size).toBe(1);
    const refused = ended.find((row) => row.status !== 'completed')!;
    expect(refused).toMatchObject({ status: 'failed', error: "ResultNotStorable: the handler's return value contains the character U+0000, which Postgres jsonb cannot store" });
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
  });
});

describe('graceful shutdown', () => {
  it('hands a handler still running after the grace back to scheduled for another worker, and lets a short one finish before exiting', async () => {
    await usePolicy(t.pool, 't.handoff', 'behaviour-shutdown', 1);
    await startExecutor(t.url);
    const leaving = await startWorker(t.url, { concurrency: 1, name: 'leaving', env: { USHER_SHUTDOWN_GRACE_SECONDS: '1' } });
    const leavingId = workerIdOf(leaving);

    const long = await enqueue('t.handoff', { lane: 'shutdown', n: 'long', ms: 60_000 });
    const behind = await enqueue('t.handoff', { lane: 'shutdown', n: 'behind' });
    const laneKey = long.lane_key!;
    await waitForStatus(long.id, 'running');

    leaving.kill('SIGTERM');
    let signalled = Date.now();
    const leavingExit = await leaving.exited;
    let exitMs = Date.now() - signalled;
    expect(leavingExit).toEqual({ code: 0, signal: null });
    // USHER_SHUTDOWN_GRACE_SECONDS (1 s), then the abort and the hand-back.
    expect(exitMs).toBeGreaterThanOrEqual(1000);
    expect(exitMs).toBeLessThan(6000);
    expect(events(leaving, 'execution:scheduled').map((line) => line.execution_id)).toEqual([long.id]);
    expect(events(leaving, 'worker:stopped')).toHaveLength(1);

    // Back to scheduled: no attempt charged, no worker, and it keeps its slot at the head of the lane.
    expect(await execution(long.id)).toMatchObject({
      status: 'scheduled', attempt: 0, worker_id: null, lease_token: null, started_at: null, completed_at: null, error: null, result: null,
    });
    expect(await q(`select id, status from usher.executions where lane_key = $1 order by id`, [laneKey])).toEqual([
      { id: long.id, status: 'scheduled' },
      { id: behind.id, status: 'requested' },
    ]);
    expect(await q('select active_count from usher.lanes where lane_key = $1', [laneKey])).toEqual([{ active_count: 1 }]);
    expect(await q(`select status, stopped_at is not null as stopped from usher.workers where id = $1`, [leavingId]))
      .toEqual([{ status: 'stopped', stopped: true }]);
    expect(await q(`select count(*)::int as n from usher.executions where status in ('running', 'canceling')`)).toEqual([{ n: 0 }]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);

    // t.handoff takes T_HANDOFF_MS in this worker instead of params.ms: same params, quick run.
    const arriving = await startWorker(t.url, { concurrency: 2, name: 'arriving', env: { T_HANDOFF_MS: '0' } });
    const arrivingId = workerIdOf(arriving);
    const finished = await waitForEnd(long.id);
    expect(finished).toMatchObject({ status: 'completed', attempt: 1, worker_id: arrivingId, result: { n: 'long', pid: arriving.child.pid } });
    const next = await waitForEnd(behind.id);
    expect(next).toMatchObject({ status: 'completed', attempt: 1, worker_id: arrivingId });
    expect(next.scheduled_at.getTime()).toBeGreaterThanOrEqual(finished.completed_at.getTime());
    expect(await q('select active_count, total_admitted::int from usher.lanes where lane_key = $1', [laneKey]))
      .toEqual([{ active_count: 0, total_admitted: 2 }]);

    // SIGTERM with a short handler in flight (default grace, 25 s): it finishes, nothing new is
    // claimed once the worker is stopping, and the worker exits.
    const inFlight = await enqueue('t.other', { n: 'in flight', ms: 1500 });
    await waitForStatus(inFlight.id, 'running');
    arriving.kill('SIGTERM');
    signalled = Date.now();
    await arriving.waitForEvent('process:stopping');
    const late = await enqueue('t.other', { n: 'late' });
    const arrivingExit = await arriving.exited;
    exitMs = Date.now() - signalled;
    expect(arrivingExit).toEqual({ code: 0, signal: null });
    // It waited for the handler, not for the whole grace.
    expect(exitMs).toBeLessThan(10_000);
    expect(await execution(inFlight.id)).toMatchObject({
      status: 'completed', attempt: 1, worker_id: arrivingId, result: { n: 'in flight', pid: arriving.child.pid },
    });
    expect(await execution(late.id)).toMatchObject({ status: 'scheduled', attempt: 0, worker_id: null });
    const [row] = await q(
      `select w.status, e.completed_at <= w.stopped_at as finished_before_stop
       from usher.workers w, usher.executions e where w.id = $1 and e.id = $2`,
      [arrivingId, inFlight.id],
    );
    expect(row).toEqual({ status: 'stopped', finished_before_stop: true });

    expect(await cancel(late.id)).toEqual([{ id: late.id, status: 'cancelled', changed: true }]);
    expect(await q(`select count(*)::int as n from usher.executions where status not in ('completed', 'failed', 'cancelled', 'timeout', 'abandoned')`))
      .toEqual([{ n: 0 }]);
    expect(await q('select * from usher.check_invariants()')).toEqual([]);
  });
});
