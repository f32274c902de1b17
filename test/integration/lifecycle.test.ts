/**
 * The lifecycle of executions end to end, with real `usher worker` / `usher executor` processes:
 * per-parameter lanes under load, retries with backoff (and what a lane does meanwhile), errors
 * that must not be retried, retry after a killed worker, lanes blocked by a failed head, pausing
 * actions and packs, a handler postponing its lane, waiting-time limits, idle-lane cleanup, delayed
 * starts, and idempotency keys.
 *
 * Each test starts from empty executions, attempts, lanes, policies, workers and pauses, with the
 * actions' retry settings back at their defaults (see beforeEach). Every wait is on a database
 * condition or a log line; "nothing happened" is shown against a witness (an admission pass that
 * provably ran after the state change, see admissionPassWitness), never after a sleep.
 * Timestamps are compared inside SQL, so their microseconds are never rounded to JS milliseconds.
 *
 * expect.soft marks the checks that found defects when they were written (the comment next to each
 * says what should hold and why): the rest of such a test still runs and reports.
 */
import pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.ts';
import type { Execution } from '../../src/queue/types.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker, type UsherProcess } from '../support/processes.ts';
import { events, eventsWhenLogged, maxOverlap as sharedMaxOverlap, workerIdOf, type Row } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;
/** Processes started by the current test, for their log lines when a wait times out. */
let procs: UsherProcess[] = [];
let probes = 0;

const terminal = ['completed', 'failed', 'cancelled', 'timeout', 'abandoned'];

beforeAll(async () => {
  t = await createTestDatabase();
  // Policies reference actions: register the test actions up front (a worker would do the same).
  // zprobe.noop has no handler anywhere: its executions are only ever admitted, never run.
  await t.pool.query(`
    insert into usher.actions (ref) values
      ('t.work'), ('t.other'), ('t.flaky'), ('t.fatal'), ('t.postpone'), ('t.handoff'), ('zprobe.noop')
    on conflict do nothing`);
});

afterAll(async () => {
  await killAll();
  await t?.drop();
});

beforeEach(async () => {
  procs = [];
  await t.pool.query(`
    truncate usher.executions, usher.execution_attempts, usher.lanes, usher.policies, usher.workers, usher.pack_pauses;
    update usher.actions
    set max_retries = 0, retry_delay_seconds = 1, retry_backoff_factor = 2, retry_max_delay_seconds = 300,
      retry_jitter = 0.2, paused_at = null, pause_reason = null;
    insert into usher.policies (ref, action_ref, threshold, parameters) values ('probe', 'zprobe.noop', 1, '{n}');`);
});

afterEach(async () => {
  await killAll();
});

async function worker(options: { concurrency?: number; name: string; env?: Record<string, string> }): Promise<UsherProcess> {
  const proc = await startWorker(t.url, options);
  procs.push(proc);
  return proc;
}

async function executor(env: Record<string, string> = {}): Promise<UsherProcess> {
  const proc = await startExecutor(t.url, env);
  procs.push(proc);
  return proc;
}

async function q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T[]> {
  return (await t.pool.query<T>(sql, values)).rows;
}

async function one<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T> {
  const rows = await q<T>(sql, values);
  expect(rows, sql).toHaveLength(1);
  return rows[0]!;
}

/**
 * waitFor on a database condition; on timeout the message carries the executions by status, the
 * lanes, and each process's exit state and last log lines.
 */
async function until<T>(what: string, check: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  try {
    return await waitFor(check, { what, timeoutMs, intervalMs: 20 });
  } catch (error) {
    const report = async (sql: string) => JSON.stringify(await q(sql).catch((e: unknown) => String(e)));
    const executions = await report(
      `select id::text, action_ref, status, attempt, lane_key, queue_position::text, run_at, scheduled_at, completed_at
       from usher.executions order by id desc limit 30`);
    const lanes = await report('select * from usher.lanes order by lane_key');
    const logs = procs.map((proc) =>
      `[${proc.child.pid} exit=${proc.child.exitCode ?? proc.child.signalCode ?? 'alive'}]\n${proc.lines.slice(-15).join('\n')}`).join('\n---\n');
    throw new Error(`${(error as Error).message}\nexecutions: ${executions}\nlanes: ${lanes}\nprocesses:\n${logs}`);
  }
}

interface Inserted {
  id: string;
  lane_key: string | null;
  status: string;
  queue_position: string | null;
}

/**
 * Inserts one execution per params object, ids in the order given. `extra` sets max_retries or a
 * run_at given as seconds from now (database clock).
 */
async function insert(action: string, params: Row[], extra: { maxRetries?: number; runInSeconds?: number } = {}): Promise<Inserted[]> {
  return q<Inserted & Row>(
    `insert into usher.executions (action_ref, params, max_retries, run_at)
     select $1, p.value, $3::integer, clock_timestamp() + make_interval(secs => $4::float8)
     from jsonb_array_elements($2::jsonb) with ordinality as p (value, ord) order by p.ord
     returning id, lane_key, status, queue_position`,
    [action, JSON.stringify(params), extra.maxRetries ?? null, extra.runInSeconds ?? null],
  );
}

async function execution(id: string): Promise<Row> {
  return one(
    `select id, status, error, result, attempt, worker_id, lane_key, queue_position, run_at, started_at, scheduled_at, completed_at
     from usher.executions where id = $1`,
    [id],
  );
}

function waitForStatus(id: string, status: string | string[], timeoutMs = 30_000): Promise<Row> {
  const wanted = typeof status === 'string' ? [status] : status;
  return until(`execution ${id} to be ${wanted.join(' or ')}`, async () => {
    const row = await execution(id);
    return wanted.includes(row.status) ? row : undefined;
  }, timeoutMs);
}

function waitForEnd(id: string, timeoutMs = 30_000): Promise<Row> {
  return waitForStatus(id, terminal, timeoutMs);
}

async function statuses(ids: string[]): Promise<string[]> {
  const rows = await q('select status from usher.executions where id = any($1::bigint[]) order by id', [ids]);
  return rows.map((row) => row.status as string);
}

/**
 * Returns once an executor admission pass has run that started after this call: it admits a probe
 * inserted now into a lane of its own whose key sorts after every "action:t.*" lane. A pass visits
 * lanes in lane_key order, one transaction each, so by the time the probe is admitted the same pass
 * has already dealt with every t lane that could act. Nothing admitted in those lanes by then means
 * the executor, too, found nothing to admit.
 */
async function admissionPassWitness(): Promise<void> {
  probes += 1;
  const [probe] = await insert('zprobe.noop', [{ n: probes }]);
  expect(probe!.lane_key).toBe(`action:zprobe.noop#[${probes}]`);
  await waitForStatus(probe!.id, 'scheduled', 10_000);
  await q('select * from usher.cancel_execution($1)', [probe!.id]);
}

async function invariants(): Promise<Row[]> {
  return q('select lane_key, problem, detail from usher.check_invariants()');
}

/** ids of `where` in the order of `orderBy` (columns of e). */
async function idsBy(orderBy: string, where: string, values: unknown[] = []): Promise<string[]> {
  const row = await one<{ ids: string[] | null }>(
    `select array_agg(e.id::text order by ${orderBy}) as ids from usher.executions e where ${where}`, values);
  return row.ids ?? [];
}

/**
 * Pairs (in id order, per lane) where an execution was admitted or started before the one before it
 * in its lane had ended. Admission in the transaction that ends the previous one comes after its
 * completed_at on the same clock, so equality never happens for a lane that is serial.
 */
async function serialBreaks(where: string, values: unknown[] = []): Promise<Row[]> {
  return q(
    `select lane_key, id::text, previous::text from (
       select e.lane_key, e.id, e.scheduled_at, e.started_at,
         lag(e.id) over w as previous, lag(e.completed_at) over w as previous_completed_at
       from usher.executions e where ${where}
       window w as (partition by e.lane_key order by e.id)
     ) s
     where previous is not null
       and (scheduled_at < previous_completed_at or started_at < previous_completed_at or previous_completed_at is null)
     order by lane_key, id`,
    values,
  );
}

function maxOverlap(from: string, to: string, where: string, values: unknown[] = []): Promise<number> {
  return sharedMaxOverlap(t.pool, from, to, where, values);
}

async function usePolicy(action: string, ref: string, threshold: number, options: { parameters?: string; onFailure?: string } = {}): Promise<void> {
  await q(
    `insert into usher.policies (ref, action_ref, threshold, parameters, on_failure) values ($1, $2, $3, $4, $5)`,
    [ref, action, threshold, options.parameters ?? '{lane}', options.onFailure ?? 'wait'],
  );
}

async function setRetries(action: string, settings: { max?: number; delay?: number; factor?: number; jitter?: number }): Promise<void> {
  await q(
    `update usher.actions
     set max_retries = coalesce($2, max_retries), retry_delay_seconds = coalesce($3, retry_delay_seconds),
       retry_backoff_factor = coalesce($4, retry_backoff_factor), retry_jitter = coalesce($5, retry_jitter)
     where ref = $1`,
    [action, settings.max ?? null, settings.delay ?? null, settings.factor ?? null, settings.jitter ?? null],
  );
}

/**
 * The attempts of an execution that ended before its last one, in order, with the backoff each
 * scheduled (retry_at - ended_at) and the gap actually seen until the next attempt started (the
 * next attempts row, or the execution row itself for the last), in seconds.
 */
async function attemptsOf(id: string): Promise<Row[]> {
  return q(
    `select a.attempt, a.status, a.error, a.result, a.worker_id::text,
       extract(epoch from a.retry_at - a.ended_at)::float8 as backoff,
       extract(epoch from coalesce(lead(a.started_at) over w, e.started_at) - a.ended_at)::float8 as gap,
       coalesce(lead(a.started_at) over w, e.started_at) >= a.retry_at as started_after_retry_at,
       a.started_at < a.ended_at as started_before_end
     from usher.execution_attempts a
     join usher.executions e on e.id = a.execution_id
     where a.execution_id = $1
     window w as (order by a.attempt, a.ended_at)
     order by a.attempt, a.ended_at`,
    [id],
  );
}

function linesFor(proc: UsherProcess, event: string, id: string): Row[] {
  return events(proc, event).filter((line) => line.execution_id === id);
}

describe('per-parameter lanes', () => {
  it('runs 20 hosts x 50 executions: each host strictly in id order, one at a time, and the hosts side by side', { timeout: 90_000 }, async () => {
    await usePolicy('t.work', 'per-host', 1, { parameters: '{host}' });
    await executor();
    await Promise.all([1, 2, 3].map((i) => worker({ concurrency: 8, name: `hosts-${i}` })));

    // Interleaved: h00, h01, ..., h19, h00, ... so every host's executions are spread over the ids.
    const startedAt = Date.now();
    const inserted = await t.pool.query(
      `insert into usher.executions (action_ref, params)
       select 't.work', jsonb_build_object('host', 'h' || lpad((g % 20)::text, 2, '0'), 'n', g / 20, 'ms', 2 + g % 4)
       from generate_series(0, 999) g order by g`,
    );
    expect(inserted.rowCount).toBe(1000);
    await until('1000 completed executions', async () =>
      (await one<{ n: number }>(`select count(*)::int as n from usher.executions where status = 'completed'`)).n === 1000 || undefined, 40_000);
    const elapsedMs = Date.now() - startedAt;
    console.info(`20 hosts x 50 executions: ${elapsedMs} ms`);
    expect(elapsedMs).toBeLessThan(40_000);

    expect(await q('select status, count(*)::int as n from usher.executions group by status')).toEqual([{ status: 'completed', n: 1000 }]);
    const perLane = await q<{ lane_key: string; n: number; hosts: number }>(
      `select lane_key, count(*)::int as n, count(distinct params->>'host')::int as hosts
       from usher.executions group by lane_key order by lane_key`);
    expect(perLane).toEqual(Array.from({ length: 20 }, (_, h) => ({
      lane_key: `action:t.work#["h${String(h).padStart(2, '0')}"]`, n: 50, hosts: 1,
    })));

    // Within each host: admitted and started in id order, each after the previous one ended.
    const outOfOrder = await q(
      `select lane_key,
         array_agg(id order by id) = array_agg(id order by scheduled_at, id) as admitted_in_id_order,
         array_agg(id order by id) = array_agg(id order by started_at, id) as started_in_id_order
       from usher.executions group by lane_key
       having not (array_agg(id order by id) = array_agg(id order by scheduled_at, id)
         and array_agg(id order by id) = array_agg(id order by started_at, id))`);
    expect(outOfOrder).toEqual([]);
    expect(await serialBreaks('true')).toEqual([]);
    const perHostMax = await q(`select distinct params->>'host' as host from usher.executions order by 1`);
    for (const { host } of perHostMax) {
      expect(await maxOverlap('scheduled_at', 'completed_at', `e.params->>'host' = $1`, [host]), String(host)).toBe(1);
    }

    // Across hosts: many held a slot, and ran, at the same instant (each host holds at most one).
    const hostsHolding = await maxOverlap('scheduled_at', 'completed_at', 'true');
    const hostsRunning = await maxOverlap('started_at', 'completed_at', 'true');
    console.info(`hosts holding a slot at once: ${hostsHolding}; running at once: ${hostsRunning}`);
    expect(hostsHolding).toBeGreaterThanOrEqual(10);
    expect(hostsHolding).toBeLessThanOrEqual(20);
    expect(hostsRunning).toBeGreaterThanOrEqual(5);

    expect(await invariants()).toEqual([]);
    expect(await q('select count(*)::int as n, sum(active_count)::int as active, min(total_admitted)::int as min_admitted, max(total_admitted)::int as max_admitted from usher.lanes where lane_key like $1', ['action:t.work#%']))
      .toEqual([{ n: 20, active: 0, min_admitted: 50, max_admitted: 50 }]);
  });
});

describe('retries with backoff', () => {
  const retrySettings = { max: 3, delay: 0.2, factor: 2, jitter: 0.2 };

  /** Expected backoff before the retry that follows attempt n. */
  const backoffAfter = (n: number) => retrySettings.delay * retrySettings.factor ** (n - 1);

  function expectBackoffs(attempts: Row[]): void {
    for (const row of attempts) {
      const nominal = backoffAfter(row.attempt);
      // retry_at is the end of the backoff, within the jitter.
      expect(row.backoff, `backoff after attempt ${row.attempt}`).toBeGreaterThanOrEqual(nominal * (1 - retrySettings.jitter) - 0.001);
      expect(row.backoff, `backoff after attempt ${row.attempt}`).toBeLessThanOrEqual(nominal * (1 + retrySettings.jitter) + 0.001);
      // The next attempt started only after it, and not much later.
      expect(row.started_after_retry_at, `attempt ${row.attempt + 1} started at or after retry_at`).toBe(true);
      expect(row.gap, `gap after attempt ${row.attempt}`).toBeGreaterThanOrEqual(nominal * (1 - retrySettings.jitter));
      expect(row.gap, `gap after attempt ${row.attempt}`).toBeLessThan(nominal * (1 + retrySettings.jitter) + 1);
      expect(row.started_before_end).toBe(true);
    }
  }

  it('retries a failing execution after growing backoffs until it succeeds; the lane (on_failure wait) keeps the newer one behind it', async () => {
    await setRetries('t.flaky', retrySettings);
    await usePolicy('t.flaky', 'retry-wait', 1, { onFailure: 'wait' });
    await executor();
    const w = await worker({ concurrency: 4, name: 'retrier' });
    const workerId = workerIdOf(w);

    const [x, y] = await insert('t.flaky', [{ lane: 'wait', n: 'x', fail_attempts: 2 }, { lane: 'wait', n: 'y' }]);
    const doneY = await waitForEnd(y!.id);
    const doneX = await execution(x!.id);

    expect(doneX).toMatchObject({
      status: 'completed', attempt: 3, error: null, worker_id: workerId, queue_position: x!.id,
      result: { n: 'x', pid: w.child.pid, attempt: 3 },
    });
    expect(doneY).toMatchObject({ status: 'completed', attempt: 1, result: { n: 'y', pid: w.child.pid, attempt: 1 } });

    const attempts = await attemptsOf(x!.id);
    expect(attempts.map(({ attempt, status, error, result, worker_id }) => ({ attempt, status, error, result, worker_id }))).toEqual([1, 2].map((n) => ({
      attempt: n,
      status: 'failed',
      error: `Error: attempt ${n} of 2 failing on purpose`,
      result: { error: { name: 'Error', message: `attempt ${n} of 2 failing on purpose` } },
      worker_id: workerId,
    })));
    expectBackoffs(attempts);
    expect(await attemptsOf(y!.id)).toEqual([]);

    // The newer one waited behind the retrying head the whole time: admitted only once x completed.
    expect(await one(
      `select y.scheduled_at > x.completed_at as y_after_x, y.started_at > x.completed_at as y_started_after_x
       from usher.executions x, usher.executions y where x.id = $1 and y.id = $2`, [x!.id, y!.id]))
      .toEqual({ y_after_x: true, y_started_after_x: true });
    expect(await one('select total_admitted::int, active_count from usher.lanes where lane_key = $1', [x!.lane_key]))
      .toEqual({ total_admitted: 4, active_count: 0 });

    const retrying = await eventsWhenLogged(w, 'execution:retrying', 2);
    expect(retrying.map((line) => [line.execution_id, line.attempt, line.outcome])).toEqual([[x!.id, 1, 'failed'], [x!.id, 2, 'failed']]);
    expect((await eventsWhenLogged(w, 'execution:completed', 2)).map((line) => [line.execution_id, line.attempt]))
      .toEqual([[x!.id, 3], [y!.id, 1]]);
    expect(events(w, 'execution:failed')).toEqual([]);
    expect(await invariants()).toEqual([]);
  });

  it('lets the next ones run during the backoff under on_failure skip, and the retry rejoins at its old place once its backoff is over', async () => {
    await setRetries('t.flaky', retrySettings);
    await usePolicy('t.flaky', 'retry-skip', 1, { onFailure: 'skip' });
    await executor();
    const w = await worker({ concurrency: 4, name: 'skipper' });

    // y runs far longer than x's backoff (at most 0.24 s): when y ends, x is due again and goes
    // before z, which has waited in the lane all along but is behind x's place.
    const [x, y, z] = await insert('t.flaky', [
      { lane: 'skip', n: 'x', fail_attempts: 1 },
      { lane: 'skip', n: 'y', ms: 800 },
      { lane: 'skip', n: 'z' },
    ]);
    const doneZ = await waitForEnd(z!.id);
    const [doneX, doneY] = [await execution(x!.id), await execution(y!.id)];
    expect([doneX.status, doneX.attempt, doneY.status, doneY.attempt, doneZ.status, doneZ.attempt])
      .toEqual(['completed', 2, 'completed', 1, 'completed', 1]);
    expect(doneX.queue_position).toBe(x!.id);

    const attempts = await attemptsOf(x!.id);
    expect(attempts.map(({ attempt, status, error }) => ({ attempt, status, error })))
      .toEqual([{ attempt: 1, status: 'failed', error: 'Error: attempt 1 of 1 failing on purpose' }]);
    expect(attempts[0]!.backoff).toBeGreaterThanOrEqual(0.16 - 0.001);
    expect(attempts[0]!.backoff).toBeLessThanOrEqual(0.24 + 0.001);
    expect(attempts[0]!.started_after_retry_at).toBe(true);

    // y was admitted during x's backoff (by the very transaction that ended x's first attempt);
    // x's retry waited for y's slot, then went before z.
    expect(await one(
      `select y.scheduled_at > a.ended_at and y.scheduled_at < a.retry_at as y_during_backoff,
         x.scheduled_at >= y.completed_at as x_after_y,
         z.scheduled_at >= x.completed_at as z_after_x
       from usher.execution_attempts a, usher.executions x, usher.executions y, usher.executions z
       where a.execution_id = $1 and x.id = $1 and y.id = $2 and z.id = $3`, [x!.id, y!.id, z!.id]))
      .toEqual({ y_during_backoff: true, x_after_y: true, z_after_x: true });
    expect(await idsBy('e.started_at', 'e.lane_key = $1', [x!.lane_key])).toEqual([y!.id, x!.id, z!.id]);
    expect((await eventsWhenLogged(w, 'execution:retrying', 1)).map((line) => line.execution_id)).toEqual([x!.id]);
    expect(await invariants()).toEqual([]);
  });
});

describe('errors that must not be retried', () => {
  it('fails at once on retryable = false or a NonRetryableError, retries left or not; an ordinary error is retried (per-execution max_retries)', async () => {
    await setRetries('t.fatal', { max: 3, delay: 0.2 });
    // No policy: the executions are admitted on insert. The executor is there for a retry of an
    // execution without lane, which waits as delayed until its backoff is over.
    await executor();
    const w = await worker({ concurrency: 4, name: 'fatal' });
    const workerId = workerIdOf(w);

    const [flagged, classed] = await insert('t.fatal', [{ kind: 'flag', n: 1 }, { kind: 'class', n: 2 }]);
    const [plain] = await insert('t.fatal', [{ kind: 'plain', n: 3 }], { maxRetries: 1 });
    const ended = await Promise.all([flagged, classed, plain].map((row) => waitForEnd(row!.id)));

    expect(ended[0]).toMatchObject({
      status: 'failed', attempt: 1, worker_id: workerId, error: 'Error: bad input (1)',
      result: { error: { name: 'Error', message: 'bad input (1)' } },
    });
    expect(ended[1]).toMatchObject({
      status: 'failed', attempt: 1, worker_id: workerId, error: 'NonRetryableError: permanent refusal (2)',
      result: { error: { name: 'NonRetryableError', message: 'permanent refusal (2)' } },
    });
    expect(await q('select id::text, max_retries from usher.executions order by id')).toEqual([
      { id: flagged!.id, max_retries: 3 }, { id: classed!.id, max_retries: 3 }, { id: plain!.id, max_retries: 1 },
    ]);
    expect(await attemptsOf(flagged!.id)).toEqual([]);
    expect(await attemptsOf(classed!.id)).toEqual([]);

    // The control: retried once (its own max_retries), then failed for good.
    expect(ended[2]).toMatchObject({ status: 'failed', attempt: 2, error: 'Error: transient trouble (3)' });
    const attempts = await attemptsOf(plain!.id);
    expect(attempts.map(({ attempt, status, error }) => ({ attempt, status, error })))
      .toEqual([{ attempt: 1, status: 'failed', error: 'Error: transient trouble (3)' }]);
    expect(attempts[0]!.started_after_retry_at).toBe(true);

    const failed = await eventsWhenLogged(w, 'execution:failed', 3);
    expect(failed.map((line) => [line.execution_id, line.attempt]).sort()).toEqual([[flagged!.id, 1], [classed!.id, 1], [plain!.id, 2]].sort());
    expect(events(w, 'execution:retrying').map((line) => [line.execution_id, line.attempt])).toEqual([[plain!.id, 1]]);
    expect(await invariants()).toEqual([]);
  });
});

describe('retry after a killed worker', () => {
  it('abandons the SIGKILLed worker\'s execution when its lease expires, retries it after the backoff, and another worker completes it', async () => {
    const shortLease = { USHER_LEASE_SECONDS: '2' };
    await usePolicy('t.handoff', 'retry-kill9', 1);
    const exec = await executor(shortLease);
    // t.handoff takes T_HANDOFF_MS in a worker started with it: forever in the victim, at once in the rescuer.
    const victim = await worker({ concurrency: 2, name: 'victim', env: { ...shortLease, T_HANDOFF_MS: '60000' } });
    const victimId = workerIdOf(victim);

    const [x] = await insert('t.handoff', [{ lane: 'kill', n: 'x' }], { maxRetries: 1 });
    const [y] = await insert('t.handoff', [{ lane: 'kill', n: 'y' }]);
    await waitForStatus(x!.id, 'running');
    victim.kill('SIGKILL');
    expect(await victim.exited).toEqual({ code: null, signal: 'SIGKILL' });
    const killedAt = Date.now();

    // Abandoned by the sweep, and back in its lane for a retry: requested during the backoff, then
    // admitted (no worker is left to claim it).
    const retried = await until('x abandoned and back in its lane', async () => {
      const row = await execution(x!.id);
      const attempts = await attemptsOf(x!.id);
      return ['requested', 'scheduled'].includes(row.status) && attempts.length === 1 ? { row, attempts } : undefined;
    }, 15_000);
    console.info(`abandoned and queued for retry ${Date.now() - killedAt} ms after SIGKILL (lease 2 s)`);
    expect(retried.row).toMatchObject({ attempt: 1, worker_id: victimId, completed_at: null, queue_position: x!.id });
    expect(retried.attempts.map(({ attempt, status, error, worker_id }) => ({ attempt, status, error, worker_id }))).toEqual([
      { attempt: 1, status: 'abandoned', error: `lease expired: worker ${victimId} stopped renewing it`, worker_id: victimId },
    ]);
    // The default backoff: 1 s +- 20 %.
    expect(retried.attempts[0]!.backoff).toBeGreaterThanOrEqual(0.8 - 0.001);
    expect(retried.attempts[0]!.backoff).toBeLessThanOrEqual(1.2 + 0.001);
    expect(await statuses([y!.id])).toEqual(['requested']);

    const rescuer = await worker({ concurrency: 2, name: 'rescuer', env: { ...shortLease, T_HANDOFF_MS: '0' } });
    const rescuerId = workerIdOf(rescuer);
    const doneY = await waitForEnd(y!.id);
    const doneX = await execution(x!.id);
    expect(doneX).toMatchObject({ status: 'completed', attempt: 2, worker_id: rescuerId, error: null, result: { n: 'x', pid: rescuer.child.pid } });
    expect(doneY).toMatchObject({ status: 'completed', attempt: 1, worker_id: rescuerId });
    const [attempt] = await attemptsOf(x!.id);
    expect(attempt).toMatchObject({ attempt: 1, status: 'abandoned', started_after_retry_at: true });
    expect(await one(
      `select y.scheduled_at > x.completed_at as y_after_x from usher.executions x, usher.executions y where x.id = $1 and y.id = $2`,
      [x!.id, y!.id])).toEqual({ y_after_x: true });

    expect(events(exec, 'sweep:expired').reduce((sum, line) => sum + Number(line.count), 0)).toBe(1);
    expect((await eventsWhenLogged(rescuer, 'execution:completed', 2)).map((line) => [line.execution_id, line.attempt]))
      .toEqual([[x!.id, 2], [y!.id, 1]]);
    expect(await invariants()).toEqual([]);
  });
});

describe('on_failure block', () => {
  it('blocks the lane behind a head that failed for good; retry_execution puts it back at its place, unblock_lane moves on without it', async () => {
    await usePolicy('t.flaky', 'block-lane', 1, { onFailure: 'block' });
    await executor();
    const w = await worker({ concurrency: 4, name: 'blocker' });

    // a fails its first attempt only, c every attempt; no retries (max_retries 0).
    const [a, b, c, d] = await insert('t.flaky', [
      { lane: 'block', n: 'a', fail_attempts: 1 },
      { lane: 'block', n: 'b' },
      { lane: 'block', n: 'c', fail_attempts: 99 },
      { lane: 'block', n: 'd' },
    ]);
    const laneKey = a!.lane_key;
    const laneStats = () => one(
      `select queue_length::int, active_count, blocked_by::text, blocked_reason, policy_ref from usher.lane_stats where lane_key = $1`, [laneKey]);

    const failedA = await waitForStatus(a!.id, 'failed');
    expect(failedA).toMatchObject({ attempt: 1, error: 'Error: attempt 1 of 1 failing on purpose' });
    expect(await laneStats()).toEqual({
      queue_length: 3, active_count: 0, blocked_by: a!.id, policy_ref: 'block-lane',
      blocked_reason: `execution ${a!.id} ended failed after 1 attempts: Error: attempt 1 of 1 failing on purpose`,
    });
    // Blocked: an admission pass has run since, the workers are idle, and b still waits.
    await admissionPassWitness();
    expect(await statuses([b!.id, c!.id, d!.id])).toEqual(['requested', 'requested', 'requested']);
    expect(await q(`select count(*)::int as n from usher.executions where status in ('scheduled', 'running')`)).toEqual([{ n: 0 }]);

    // Operator retry: a goes back to its place (before b), as a new attempt, and the lane unblocks.
    expect(await q('select id::text, status from usher.retry_execution($1)', [a!.id])).toEqual([{ id: a!.id, status: 'requested' }]);
    expect((await laneStats()).blocked_by).toBeNull();
    // c then fails for good in its turn and blocks the lane again.
    const failedC = await waitForStatus(c!.id, 'failed');
    expect(failedC).toMatchObject({ attempt: 1, error: 'Error: attempt 1 of 99 failing on purpose' });
    expect(await execution(a!.id)).toMatchObject({ status: 'completed', attempt: 2, error: null, result: { n: 'a', attempt: 2, pid: w.child.pid } });
    expect(await execution(b!.id)).toMatchObject({ status: 'completed', attempt: 1 });
    expect(await attemptsOf(a!.id).then((rows) => rows.map(({ attempt, status, error, backoff }) => ({ attempt, status, error, backoff }))))
      .toEqual([{ attempt: 1, status: 'failed', error: 'Error: attempt 1 of 1 failing on purpose', backoff: null }]);
    expect(await one(
      `select a.scheduled_at < b.scheduled_at as a_before_b, b.scheduled_at > a.completed_at as b_after_a,
         c.scheduled_at > b.completed_at as c_after_b
       from usher.executions a, usher.executions b, usher.executions c where a.id = $1 and b.id = $2 and c.id = $3`,
      [a!.id, b!.id, c!.id])).toEqual({ a_before_b: true, b_after_a: true, c_after_b: true });
    expect(await laneStats()).toMatchObject({ queue_length: 1, active_count: 0, blocked_by: c!.id });
    await admissionPassWitness();
    expect(await statuses([d!.id])).toEqual(['requested']);

    // Unblock: the lane moves on without c, which stays failed.
    expect(await q('select usher.unblock_lane($1)::text as skipped', [laneKey])).toEqual([{ skipped: c!.id }]);
    const doneD = await waitForEnd(d!.id);
    expect(doneD).toMatchObject({ status: 'completed', attempt: 1 });
    expect(await execution(c!.id)).toMatchObject({ status: 'failed', attempt: 1 });
    expect(await laneStats()).toMatchObject({ queue_length: 0, active_count: 0, blocked_by: null, blocked_reason: null });
    expect(await idsBy('e.scheduled_at', 'e.lane_key = $1', [laneKey])).toEqual([a!.id, b!.id, c!.id, d!.id]);
    expect(await invariants()).toEqual([]);
  });
});

describe('pause and resume', () => {
  it('pausing an action lets the running execution finish and starts no other; resuming runs the rest in id order; a pack pause holds every action of the pack', async () => {
    await usePolicy('t.work', 'pause-lane', 1);
    await executor();
    await worker({ concurrency: 4, name: 'pauser' });

    const [running, ...waiting] = await insert('t.work', [
      { lane: 'pause', n: 0, ms: 1000 }, { lane: 'pause', n: 1 }, { lane: 'pause', n: 2 }, { lane: 'pause', n: 3 },
    ]);
    const waitingIds = waiting.map((row) => row.id);
    await waitForStatus(running!.id, 'running');
    expect(await q(`select usher.pause_action('t.work', 'maintenance') as paused`)).toEqual([{ paused: true }]);
    const { paused_at: pausedAt } = await one(`select paused_at from usher.actions where ref = 't.work'`);
    expect(pausedAt).toBeInstanceOf(Date);
    expect(await q(`select action_ref, paused, queue_length::int, active_count::int from usher.queue_stats where action_ref in ('t.work', 't.other') order by 1`))
      .toEqual([
        { action_ref: 't.other', paused: false, queue_length: 0, active_count: 0 },
        { action_ref: 't.work', paused: true, queue_length: 3, active_count: 1 },
      ]);

    // The running one finishes, after the pause, and gives its slot back; nothing takes it.
    const finished = await waitForEnd(running!.id);
    expect(finished.status).toBe('completed');
    expect(await one(`select completed_at > (select paused_at from usher.actions where ref = 't.work') as after from usher.executions where id = $1`, [running!.id]))
      .toEqual({ after: true });
    await admissionPassWitness();
    expect(await statuses(waitingIds)).toEqual(['requested', 'requested', 'requested']);
    expect(await one('select active_count from usher.lanes where lane_key = $1', [running!.lane_key])).toEqual({ active_count: 0 });
    expect((await one(`select paused from usher.queue_stats where action_ref = 't.work'`)).paused).toBe(true);
    expect(await invariants()).toEqual([]);

    const { now: resumedAt } = await one('select clock_timestamp() as now');
    expect(await q(`select usher.resume_action('t.work') as resumed`)).toEqual([{ resumed: true }]);
    await until('the rest completed', async () =>
      (await statuses(waitingIds)).every((status) => status === 'completed') || undefined);
    expect(await idsBy('e.scheduled_at', 'e.id = any($1::bigint[])', [waitingIds])).toEqual(waitingIds);
    expect(await serialBreaks('e.lane_key = $1', [running!.lane_key])).toEqual([]);
    expect(await one('select min(scheduled_at) >= $2 as after_resume from usher.executions where id = any($1::bigint[])', [waitingIds, resumedAt]))
      .toEqual({ after_resume: true });
    expect((await one(`select paused from usher.queue_stats where action_ref = 't.work'`)).paused).toBe(false);

    // A pack pause: every action of pack t waits, with a policy or without one (t.other has none).
    expect(await q(`select usher.pause_pack('t', 'deploy') as paused`)).toEqual([{ paused: true }]);
    expect(await q(`select action_ref, paused from usher.queue_stats where action_ref in ('t.work', 't.other', 'zprobe.noop') order by 1`))
      .toEqual([
        { action_ref: 't.other', paused: true },
        { action_ref: 't.work', paused: true },
        { action_ref: 'zprobe.noop', paused: false },
      ]);
    const packWaiting = await insert('t.work', [{ lane: 'pause', n: 4 }, { lane: 'pause', n: 5 }]);
    const [free] = await insert('t.other', [{ n: 'free' }]);
    expect(free).toMatchObject({ status: 'requested', lane_key: 'action:t.other' });
    await admissionPassWitness();
    const packIds = [...packWaiting.map((row) => row.id), free!.id];
    expect(await statuses(packIds)).toEqual(['requested', 'requested', 'requested']);
    expect(await q(`select usher.resume_pack('t') as resumed`)).toEqual([{ resumed: true }]);
    await until('the pack\'s executions completed', async () =>
      (await statuses(packIds)).every((status) => status === 'completed') || undefined);
    expect(await idsBy('e.scheduled_at', 'e.id = any($1::bigint[])', [packWaiting.map((row) => row.id)])).toEqual(packWaiting.map((row) => row.id));
    expect(await q(`select count(*)::int as n from usher.queue_stats where paused`)).toEqual([{ n: 0 }]);
    expect(await invariants()).toEqual([]);
  });
});

describe('ctx.pauseLaneUntil', () => {
  it('puts the execution back at the head with no attempt charged, pauses the lane until then, and runs it first once the pause is over', async () => {
    await usePolicy('t.postpone', 'postpone-lane', 1);
    // A poll every 10 s: only the executor's own wake-up at paused_until can admit promptly.
    await executor({ USHER_POLL_INTERVAL_MS: '10000' });
    const w = await worker({ concurrency: 4, name: 'postponer' });

    const [p, q1, q2] = await insert('t.postpone', [
      { lane: 'postpone', n: 'p', pause_ms: 2000 }, { lane: 'postpone', n: 'q1' }, { lane: 'postpone', n: 'q2' },
    ]);
    const laneKey = p!.lane_key;
    const [postponed] = await eventsWhenLogged(w, 'execution:postponed', 1);
    expect(postponed).toMatchObject({ execution_id: p!.id, attempt: 1, reason: 'upstream 429' });

    // Right after: back at the head, not charged, the lane paused until the handler's time.
    const during = await one(
      `select e.status, e.attempt, e.worker_id, e.started_at, e.scheduled_at, e.queue_position::text, e.run_at,
         l.paused_until = $2::timestamptz as paused_until_matches, l.pause_reason, l.active_count,
         clock_timestamp() < l.paused_until as still_paused
       from usher.executions e join usher.lanes l on l.lane_key = e.lane_key where e.id = $1`,
      [p!.id, postponed!.until]);
    expect(during).toEqual({
      status: 'requested', attempt: 0, worker_id: null, started_at: null, scheduled_at: null, queue_position: p!.id, run_at: null,
      paused_until_matches: true, pause_reason: 'upstream 429', active_count: 0, still_paused: true,
    });
    expect(await one(`select paused_until = $2::timestamptz as shown, pause_reason from usher.lane_stats where lane_key = $1`, [laneKey, postponed!.until]))
      .toEqual({ shown: true, pause_reason: 'upstream 429' });
    expect(await statuses([q1!.id, q2!.id])).toEqual(['requested', 'requested']);

    const doneQ2 = await waitForEnd(q2!.id);
    expect(doneQ2.status).toBe('completed');
    expect(await execution(p!.id)).toMatchObject({ status: 'completed', attempt: 1, error: null, result: { n: 'p', attempt: 1, pid: w.child.pid } });
    expect(await attemptsOf(p!.id)).toEqual([]);

    // Nothing of the lane was admitted before the pause ended; p first, within a second of it.
    const timing = await one(
      `select extract(epoch from p.scheduled_at - l.paused_until)::float8 as p_after_pause,
         q1.scheduled_at > p.completed_at as q1_after_p, q2.scheduled_at > q1.completed_at as q2_after_q1
       from usher.lanes l, usher.executions p, usher.executions q1, usher.executions q2
       where l.lane_key = $1 and p.id = $2 and q1.id = $3 and q2.id = $4`,
      [laneKey, p!.id, q1!.id, q2!.id]);
    expect(timing.p_after_pause).toBeGreaterThanOrEqual(0);
    expect(timing.p_after_pause).toBeLessThan(1);
    expect(timing).toMatchObject({ q1_after_p: true, q2_after_q1: true });
    expect(await idsBy('e.scheduled_at', 'e.lane_key = $1', [laneKey])).toEqual([p!.id, q1!.id, q2!.id]);
    expect((await eventsWhenLogged(w, 'execution:completed', 3)).map((line) => [line.execution_id, line.attempt]))
      .toEqual([[p!.id, 1], [q1!.id, 1], [q2!.id, 1]]);
    expect(events(w, 'execution:retrying')).toEqual([]);
    expect(linesFor(w, 'execution:postponed', p!.id)).toHaveLength(1);
    expect(await invariants()).toEqual([]);
  });

  it('holds a threshold-2 lane through the pause even with free slots, while the other execution that was running finishes', async () => {
    await usePolicy('t.postpone', 'postpone-pair', 2);
    await executor();
    const w = await worker({ concurrency: 4, name: 'pair' });

    // p and r are admitted together; p postpones at once, r runs on for a second, inside the 2 s pause.
    const [p, r, s] = await insert('t.postpone', [
      { lane: 'pair', n: 'p', pause_ms: 2000 }, { lane: 'pair', n: 'r', ms: 1000 }, { lane: 'pair', n: 's' },
    ]);
    const laneKey = p!.lane_key;
    const [postponed] = await eventsWhenLogged(w, 'execution:postponed', 1);
    expect(postponed).toMatchObject({ execution_id: p!.id, reason: 'upstream 429' });
    expect(await one(
      `select p.status, p.attempt, r.status as r_status, s.status as s_status, clock_timestamp() < l.paused_until as still_paused
       from usher.lanes l, usher.executions p, usher.executions r, usher.executions s
       where l.lane_key = $1 and p.id = $2 and r.id = $3 and s.id = $4`, [laneKey, p!.id, r!.id, s!.id]))
      .toEqual({ status: 'requested', attempt: 0, r_status: 'running', s_status: 'requested', still_paused: true });
    // p waits at the head of a paused lane; r was admitted with it, before the postponement, and
    // broke no order, so check_invariants must not report r as "admitted past" p. It does when it
    // measures p's wait from its original queued_at (postpone_execution keeps it, run_at null).
    expect.soft(await invariants(), 'check_invariants while p is postponed and r runs').toEqual([]);

    await waitForEnd(s!.id);
    expect(await statuses([p!.id, r!.id, s!.id])).toEqual(['completed', 'completed', 'completed']);
    expect(await execution(p!.id)).toMatchObject({ attempt: 1, result: { n: 'p', attempt: 1 } });
    // r ended during the pause; its slot stayed free until the pause was over, then p and s went together.
    expect(await one(
      `select r.completed_at < l.paused_until as r_ended_during_pause,
         p.scheduled_at >= l.paused_until as p_after_pause, s.scheduled_at >= l.paused_until as s_after_pause,
         p.scheduled_at = s.scheduled_at as one_batch
       from usher.lanes l, usher.executions p, usher.executions r, usher.executions s
       where l.lane_key = $1 and p.id = $2 and r.id = $3 and s.id = $4`, [laneKey, p!.id, r!.id, s!.id]))
      .toEqual({ r_ended_during_pause: true, p_after_pause: true, s_after_pause: true, one_batch: true });
    expect(await idsBy('e.scheduled_at, e.queue_position', 'e.lane_key = $1', [laneKey])).toEqual([r!.id, p!.id, s!.id]);
    expect(await invariants()).toEqual([]);
  });
});

describe('queue_timeout_seconds', () => {
  it('cancels an execution that waited in its lane longer than the policy allows; an operator retry waits afresh from its retry', async () => {
    await q(
      `insert into usher.policies (ref, action_ref, threshold, parameters, queue_timeout_seconds)
       values ('queue-timeout', 't.flaky', 1, '{lane}', 2)`);
    await executor();
    await worker({ concurrency: 4, name: 'impatient' });

    // a fails for good at once; b then holds the only slot for 3.5 s; c waits behind b past 2 s.
    const [a, b, c] = await insert('t.flaky', [
      { lane: 'qt', n: 'a', fail_attempts: 1 }, { lane: 'qt', n: 'b', ms: 3500 }, { lane: 'qt', n: 'c' },
    ]);
    const laneKey = a!.lane_key;
    const cancelled = await waitForEnd(c!.id, 10_000);
    expect(cancelled).toMatchObject({
      status: 'cancelled', attempt: 0, worker_id: null, started_at: null,
      result: { reason: `Waited longer than queue_timeout_seconds = 2 in lane ${laneKey} (policy queue-timeout)`, policy_ref: 'queue-timeout' },
    });
    const waited = await one(`select extract(epoch from completed_at - queued_at)::float8 as s from usher.executions where id = $1`, [c!.id]);
    expect(waited.s).toBeGreaterThanOrEqual(2);
    expect(waited.s).toBeLessThan(3);
    expect(await execution(a!.id)).toMatchObject({ status: 'failed', attempt: 1 });
    expect(await statuses([b!.id])).toEqual(['running']);

    // a is retried by an operator while b still runs: back at its place, it waits for b's slot,
    // well under 2 s from now, although it was enqueued more than 2 s ago.
    expect(await q('select id::text, status from usher.retry_execution($1)', [a!.id])).toEqual([{ id: a!.id, status: 'requested' }]);
    const { retried_at: retriedAt } = await one('select clock_timestamp() as retried_at');
    expect(await statuses([b!.id])).toEqual(['running']);
    // b was admitted while a had failed, not while a waited: no order was broken. check_invariants
    // reports one when it measures a's wait from its original queued_at (retry_execution keeps it).
    expect.soft(await invariants(), 'check_invariants while the retried a waits for b').toEqual([]);
    const doneB = await waitForEnd(b!.id);
    expect(doneB.status).toBe('completed');
    expect(await one('select extract(epoch from $2::timestamptz - completed_at)::float8 < 0 as b_ended_after_retry, extract(epoch from completed_at - $2::timestamptz)::float8 < 1.9 as short_wait from usher.executions where id = $1', [b!.id, retriedAt]))
      .toEqual({ b_ended_after_retry: true, short_wait: true });
    // Waiting time counts from joining the lane again, not from the first enqueue: a must not be
    // cancelled by cancel_overdue_waiting at once.
    const doneA = await waitForEnd(a!.id);
    expect.soft(doneA, 'the retried execution runs after b instead of timing out on its original enqueue time')
      .toMatchObject({ status: 'completed', attempt: 2, result: { n: 'a', attempt: 2 } });
    expect(await invariants()).toEqual([]);
  });

  it('does not cancel executions of a paused action, which could not have been admitted, for their time in the lane', async () => {
    await q(
      `insert into usher.policies (ref, action_ref, threshold, parameters, queue_timeout_seconds)
       values ('paused-timeout', 't.flaky', 1, '{lane}', 2), ('witness-timeout', 't.work', 1, '{lane}', 2)`);
    await executor();
    await worker({ concurrency: 4, name: 'paused-impatient' });
    expect(await q(`select usher.pause_action('t.flaky') as paused`)).toEqual([{ paused: true }]);

    const [held] = await insert('t.flaky', [{ lane: 'held', n: 'held' }]);
    // The witness: w waits behind a long t.work in another lane and times out. It joined its lane
    // after held did, so the sweep that cancels w has found held waiting longer still.
    const [long, w] = await insert('t.work', [{ lane: 'witness', n: 'long', ms: 4000 }, { lane: 'witness', n: 'w' }]);
    expect(await waitForEnd(w!.id, 10_000)).toMatchObject({ status: 'cancelled', result: { policy_ref: 'witness-timeout' } });
    expect(await statuses([long!.id])).toEqual(['running']);
    // Paused, it could not have been admitted: it keeps its place until resumed (as method cancel
    // already treats a pause as holding, not as short of a slot). cancel_overdue_waiting must not
    // count that time as waiting.
    expect.soft(await execution(held!.id), "the paused action's waiting execution").toMatchObject({ status: 'requested', result: null });

    expect(await q(`select usher.resume_action('t.flaky') as resumed`)).toEqual([{ resumed: true }]);
    expect.soft(await waitForEnd(held!.id), "the paused action's execution after resume").toMatchObject({ status: 'completed', attempt: 1 });
  });
});

describe('idle-lane cleanup', () => {
  it('keeps a lane blocked by a failed head, or paused by an operator, when it removes idle lanes', async () => {
    await usePolicy('t.flaky', 'idle-block', 1, { onFailure: 'block' });
    // Idle lanes are removed after 1 s instead of 300 s.
    await executor({ USHER_IDLE_LANE_SECONDS: '1' });
    await worker({ concurrency: 4, name: 'idler' });
    const blockedLane = 'action:t.flaky#["blocked"]';
    const pausedLane = 'action:t.flaky#["paused"]';
    const witnessLane = 'action:t.flaky#["witness"]';

    const [a] = await insert('t.flaky', [{ lane: 'blocked', n: 'a', fail_attempts: 1 }]);
    await waitForStatus(a!.id, 'failed');
    expect(await q(`select usher.pause_lane($1, clock_timestamp() + interval '1 hour', 'operator hold') as paused`, [pausedLane]))
      .toEqual([{ paused: true }]);
    const laneState = () => q(
      `select lane_key, blocked_by::text, paused_until > clock_timestamp() as paused from usher.lanes
       where lane_key in ($1, $2) order by lane_key`, [blockedLane, pausedLane]);
    expect(await laneState()).toEqual([
      { lane_key: blockedLane, blocked_by: a!.id, paused: null },
      { lane_key: pausedLane, blocked_by: null, paused: true },
    ]);

    // A lane that went idle after both: once the cleanup has removed it, the same cleanup statement
    // found the other two idle for long enough as well.
    const [w] = await insert('t.flaky', [{ lane: 'witness', n: 'w' }]);
    await waitForEnd(w!.id);
    await until('the idle witness lane removed', async () =>
      (await q('select 1 from usher.lanes where lane_key = $1', [witnessLane])).length === 0 || undefined, 15_000);

    // Idle, but not without state: the block and the pause must survive; delete_idle_lanes must
    // not remove a lane with blocked_by or a paused_until in the future.
    expect.soft(await laneState(), 'blocked and paused lanes after the idle-lane cleanup').toEqual([
      { lane_key: blockedLane, blocked_by: a!.id, paused: null },
      { lane_key: pausedLane, blocked_by: null, paused: true },
    ]);
    const [b, c] = await insert('t.flaky', [{ lane: 'blocked', n: 'b' }, { lane: 'paused', n: 'c' }]);
    await admissionPassWitness();
    expect.soft(await statuses([b!.id, c!.id]), 'new executions in the blocked and the paused lane').toEqual(['requested', 'requested']);
  });
});

describe('run_at', () => {
  it('admits a delayed execution on the executor\'s own wake-up at run_at, where it takes its place in its lane behind those already waiting', async () => {
    await usePolicy('t.work', 'run-at', 1);
    // Polls every 10 s: admission within a second of run_at can only come from the wake-up timer.
    const slowPoll = { USHER_POLL_INTERVAL_MS: '10000' };
    await executor(slowPoll);
    await worker({ concurrency: 4, name: 'delayed', env: slowPoll });

    // x in an idle lane, x2 in a lane that will be busy at run_at; both inserted first, due in 2 s.
    const [x, x2] = await q<Inserted & Row>(
      `insert into usher.executions (action_ref, params, run_at)
       values ('t.work', '{"lane": "idle", "n": "x"}', now() + interval '2 seconds'),
              ('t.work', '{"lane": "busy", "n": "x2"}', now() + interval '2 seconds')
       returning id, lane_key, status, queue_position, run_at::text`);
    expect([x!.status, x!.queue_position, x2!.status, x2!.queue_position]).toEqual(['delayed', null, 'delayed', null]);
    // One statement, one clock: both are due at the same instant. (run_at is cleared on admission.)
    expect(x!.run_at).toBe(x2!.run_at);
    expect(await one(`select delayed_count::int, queue_length::int from usher.queue_stats where action_ref = 't.work'`))
      .toEqual({ delayed_count: 2, queue_length: 0 });
    // An action without policy: delayed too, then admitted at run_at without a lane.
    const [free] = await q<Inserted & Row>(
      `insert into usher.executions (action_ref, params, run_at) values ('t.other', '{"n": "free"}', $1::timestamptz)
       returning id, lane_key, status, queue_position`, [x!.run_at]);
    expect(free).toMatchObject({ status: 'delayed', lane_key: null, queue_position: null });
    // Then a, b, c of 1.5 s each in x2's lane: at run_at b runs and c still waits.
    const [a, b, c] = await insert('t.work', [
      { lane: 'busy', n: 'a', ms: 1500 }, { lane: 'busy', n: 'b', ms: 1500 }, { lane: 'busy', n: 'c', ms: 1500 },
    ]);
    // d is enqueued after x2 has joined the lane: it goes behind x2.
    await waitForStatus(x2!.id, ['requested', 'scheduled', 'running', 'completed'], 10_000);
    const [d] = await insert('t.work', [{ lane: 'busy', n: 'd' }]);
    const doneD = await waitForEnd(d!.id, 20_000);
    expect(doneD.status).toBe('completed');

    const timing = await q(
      `select e.params->>'n' as n, e.status, e.queue_position > e.id as position_taken_later,
         extract(epoch from e.queued_at - $2::timestamptz)::float8 as joined_after_run_at,
         extract(epoch from e.scheduled_at - $2::timestamptz)::float8 as admitted_after_run_at
       from usher.executions e
       where e.id = any($1::bigint[]) order by e.id`, [[x!.id, x2!.id], x!.run_at]);
    expect(timing.map(({ n, status, position_taken_later }) => ({ n, status, position_taken_later }))).toEqual([
      { n: 'x', status: 'completed', position_taken_later: true },
      { n: 'x2', status: 'completed', position_taken_later: true },
    ]);
    for (const row of timing) {
      expect(row.joined_after_run_at, `${row.n} joined its lane after run_at`).toBeGreaterThanOrEqual(0);
      expect(row.joined_after_run_at, `${row.n} joined its lane within a second of run_at`).toBeLessThan(1);
    }
    // x's lane was idle: admitted right when it joined.
    expect(timing[0]!.admitted_after_run_at).toBeLessThan(1);
    const freeTiming = await one(
      `select status, lane_key, extract(epoch from scheduled_at - $2::timestamptz)::float8 as admitted_after_run_at
       from usher.executions where id = $1`, [free!.id, x!.run_at]);
    expect(freeTiming).toMatchObject({ status: 'completed', lane_key: null });
    expect(freeTiming.admitted_after_run_at).toBeGreaterThanOrEqual(0);
    expect(freeTiming.admitted_after_run_at).toBeLessThan(1);

    // x2 took its place at run_at: behind c (which was waiting then, though enqueued after x2), before d.
    const order = await one(
      `select x2.queue_position > c.id as behind_c, x2.queue_position < d.id as before_d,
         c.scheduled_at > x2.queued_at as c_was_waiting, b.scheduled_at < x2.queued_at as b_was_admitted
       from usher.executions x2, usher.executions b, usher.executions c, usher.executions d
       where x2.id = $1 and b.id = $2 and c.id = $3 and d.id = $4`, [x2!.id, b!.id, c!.id, d!.id]);
    expect(order).toEqual({ behind_c: true, before_d: true, c_was_waiting: true, b_was_admitted: true });
    expect(await idsBy('e.scheduled_at', 'e.lane_key = $1', [x2!.lane_key])).toEqual([a!.id, b!.id, c!.id, x2!.id, d!.id]);
    expect(await serialBreaks('e.lane_key = $1 and e.id <> $2', [x2!.lane_key, x2!.id])).toEqual([]);
    expect(await invariants()).toEqual([]);
  });
});

describe('idempotency keys', () => {
  it('gives 50 concurrent enqueues with one key one execution; once it has ended the key enqueues a new one', async () => {
    const pool = new pg.Pool({ connectionString: t.url, max: 50 });
    try {
      const clients = await Promise.all(Array.from({ length: 50 }, () => pool.connect()));
      const pids = new Set((await Promise.all(clients.map((client) => client.query('select pg_backend_pid() as pid')))).map((r) => r.rows[0].pid));
      expect(pids.size).toBe(50);
      const input = { action_ref: 't.work', params: { n: 'order-42' }, idempotency_key: 'order-42' };
      let answers: Execution[];
      try {
        answers = await Promise.all(clients.map((client) => enqueue(client, input)));
      } finally {
        for (const client of clients) client.release();
      }
      const ids = new Set(answers.map((execution) => execution.id));
      expect(ids.size).toBe(1);
      const [first] = ids;
      expect(await q(`select id::text, status, idempotency_key from usher.executions where idempotency_key = 'order-42'`))
        .toEqual([{ id: first, status: 'scheduled', idempotency_key: 'order-42' }]);
      expect(answers.every((execution) => execution.idempotency_key === 'order-42' && execution.action_ref === 't.work')).toBe(true);

      // The same key within one enqueueMany, and a different key: one existing, one new.
      const [again, other] = await enqueueMany(t.pool, [input, { ...input, idempotency_key: 'order-43' }]);
      expect(again!.id).toBe(first);
      expect(other!.id).not.toBe(first);

      // No worker yet: nothing ran. Now one runs both; the key is free again once its execution ended.
      const runner = await worker({ concurrency: 2, name: 'idempotent' });
      await waitForEnd(first!);
      await waitForEnd(other!.id);
      // A new enqueue with the key after it ended creates a new execution. The worker is stopped
      // first, so that this one cannot end before the next duplicate arrives.
      runner.kill('SIGTERM');
      expect(await runner.exited).toEqual({ code: 0, signal: null });
      const next = await enqueue(t.pool, input);
      expect(next.id).not.toBe(first);
      expect(BigInt(next.id)).toBeGreaterThan(BigInt(first!));
      expect(next.status).toBe('scheduled');
      const duplicates = await Promise.all(Array.from({ length: 10 }, () => enqueue(pool, input)));
      expect(new Set(duplicates.map((execution) => execution.id))).toEqual(new Set([next.id]));
      expect(await q(`select id::text, status from usher.executions where idempotency_key = 'order-42' order by id`)).toEqual([
        { id: first, status: 'completed' },
        { id: next.id, status: 'scheduled' },
      ]);
    } finally {
      await pool.end();
    }
  });
});
