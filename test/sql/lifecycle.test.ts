/**
 * Retries and the head of a lane, delayed starts, pauses, waiting-time limits and idempotency keys,
 * driven through the SQL functions so every interleaving is the test's choice. Time is moved by
 * editing run_at / queued_at / paused_until rather than by waiting.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { enqueue, enqueueMany } from '../../src/queue/enqueue.ts';
import { admitQueued, cancelOverdueWaiting, expireRunningExecutions, releaseDueDelayed } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import type { ClaimedExecution } from '../../src/queue/types.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-lifecycle', host: 'test', pid: 1, concurrency: 100,
    actions: [{ ref: 'p.a' }, { ref: 'p.b' }, { ref: 'q.free' }],
  });
});
afterAll(() => t.drop());

beforeEach(async () => {
  await t.pool.query(`
    delete from usher.executions; delete from usher.execution_attempts; delete from usher.lanes; delete from usher.policies;
    delete from usher.pack_pauses;
    update usher.actions set max_retries = 0, paused_at = null, retry_delay_seconds = 1, retry_jitter = 0.2;`);
});

/** Inserts `count` executions; `runAtHours` in the future makes them delayed. */
async function insert(actionRef: string, count: number, runAtHours?: number): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params, run_at)
     select $1, jsonb_build_object('n', g), clock_timestamp() + make_interval(hours => $3)
     from generate_series(1, $2) g returning id`,
    [actionRef, count, runAtHours ?? null],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

async function rows(sql: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
  return (await t.pool.query(sql, values)).rows;
}

async function statusOf(ids: string[]): Promise<string[]> {
  const found = await rows('select id, status from usher.executions where id = any($1::bigint[]) order by id', [ids]);
  return found.map((row) => row.status as string);
}

async function claimOne(action: string): Promise<ClaimedExecution> {
  const [claimed] = await calls.claimScheduled(t.pool, workerId, [action], 1, 30);
  if (!claimed) throw new Error(`nothing of ${action} to claim`);
  return claimed;
}

/** Moves a retry's backoff (or a delayed start) into the past. */
async function makeDue(id: string): Promise<void> {
  await t.pool.query(`update usher.executions set run_at = clock_timestamp() - interval '1 millisecond' where id = $1`, [id]);
}

describe('retries', () => {
  it('puts a failed attempt with retries left back at the head of its lane after a backoff, and the lane waits for it', async () => {
    await t.pool.query(`update usher.actions set max_retries = 2 where ref = 'p.a';
      insert into usher.policies (ref, action_ref, threshold) values ('a1', 'p.a', 1);`);
    const [a, b] = await insert('p.a', 2);
    await admitQueued(t.pool);
    const first = await claimOne('p.a');
    expect(await calls.failExecution(t.pool, first, 'Error: upstream down', '{"error": {}}')).toBe('requested');

    const [row] = await rows(`select status, attempt, queue_position = id as kept_place, error, completed_at,
        extract(epoch from run_at - updated_at)::float8 as backoff from usher.executions where id = $1`, [a]);
    expect(row).toMatchObject({ status: 'requested', attempt: 1, kept_place: true, error: 'Error: upstream down', completed_at: null });
    expect(row!.backoff).toBeGreaterThanOrEqual(0.8 - 0.001);
    expect(row!.backoff).toBeLessThanOrEqual(1.2 + 0.001);
    expect(await rows(`select execution_id, attempt, worker_id, status, error, retry_at is not null as has_retry_at from usher.execution_attempts`))
      .toEqual([{ execution_id: a, attempt: 1, worker_id: workerId, status: 'failed', error: 'Error: upstream down', has_retry_at: true }]);

    await admitQueued(t.pool);
    expect(await statusOf([a!, b!])).toEqual(['requested', 'requested']);
    expect((await rows(`select next_retry_at is not null as backing_off from usher.lane_stats`))[0]).toEqual({ backing_off: true });
    await makeDue(a!);
    await admitQueued(t.pool);
    expect(await statusOf([a!, b!])).toEqual(['scheduled', 'requested']);
    const second = await claimOne('p.a');
    expect([second.id, second.attempt]).toEqual([a, 2]);
    expect(await calls.completeExecution(t.pool, second, '{"ok": true}')).toBe('completed');
    expect(await statusOf([a!, b!])).toEqual(['completed', 'scheduled']);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('lets newer executions pass a retry in its backoff when the policy says skip, and still admits the retry first once due', async () => {
    await t.pool.query(`update usher.actions set max_retries = 1 where ref = 'p.a';
      insert into usher.policies (ref, action_ref, threshold, on_failure) values ('a1', 'p.a', 1, 'skip');`);
    const [a, b, c] = await insert('p.a', 3);
    await admitQueued(t.pool);
    await calls.failExecution(t.pool, await claimOne('p.a'), 'Error: flaky', null);
    expect(await statusOf([a!, b!, c!])).toEqual(['requested', 'scheduled', 'requested']);
    await makeDue(a!);
    await calls.completeExecution(t.pool, await claimOne('p.a'), 'null');
    expect(await statusOf([a!, b!, c!])).toEqual(['scheduled', 'completed', 'requested']);
  });

  it('ends for good when no retries are left or the error is not retryable, and blocks the lane when the policy says block', async () => {
    await t.pool.query(`update usher.actions set max_retries = 5 where ref = 'p.a';
      insert into usher.policies (ref, action_ref, threshold, on_failure) values ('a1', 'p.a', 1, 'block');`);
    const [a, b] = await insert('p.a', 2);
    await admitQueued(t.pool);
    expect(await calls.failExecution(t.pool, await claimOne('p.a'), 'NonRetryableError: bad input', null, false)).toBe('failed');
    expect(await rows('select count(*)::int as n from usher.execution_attempts')).toEqual([{ n: 0 }]);
    await admitQueued(t.pool);
    expect(await statusOf([a!, b!])).toEqual(['failed', 'requested']);
    expect(await rows(`select lane_key, blocked_by, blocked_reason from usher.lane_stats`)).toEqual([{
      lane_key: 'action:p.a', blocked_by: a, blocked_reason: `execution ${a} ended failed after 1 attempts: NonRetryableError: bad input`,
    }]);

    // An operator retry puts it back at its place ahead of b and unblocks the lane.
    expect(await rows('select * from usher.retry_execution($1)', [a])).toEqual([{ id: a, status: 'requested' }]);
    await admitQueued(t.pool);
    expect(await statusOf([a!, b!])).toEqual(['scheduled', 'requested']);
    const again = await claimOne('p.a');
    expect([again.id, again.attempt]).toEqual([a, 2]);
    expect(await rows('select attempt, status, error from usher.execution_attempts')).toEqual([
      { attempt: 1, status: 'failed', error: 'NonRetryableError: bad input' },
    ]);
    await calls.failExecution(t.pool, again, 'NonRetryableError: still bad', null, false);
    expect(await rows('select usher.unblock_lane($1) as skipped', ['action:p.a'])).toEqual([{ skipped: a }]);
    await admitQueued(t.pool);
    expect(await statusOf([a!, b!])).toEqual(['failed', 'scheduled']);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('retries an abandoned execution too, recording the abandoned attempt', async () => {
    await t.pool.query(`update usher.actions set max_retries = 1 where ref = 'q.free'`);
    const [a] = await insert('q.free', 1);
    const claimed = await claimOne('q.free');
    await t.pool.query(`update usher.executions set lease_expires_at = clock_timestamp() - interval '1 second' where id = $1`, [a]);
    expect(await expireRunningExecutions(t.pool, 30)).toBe(1);
    expect(await statusOf([a!])).toEqual(['delayed']);
    expect(await rows('select status, error from usher.execution_attempts')).toEqual([
      { status: 'abandoned', error: `lease expired: worker ${workerId} stopped renewing it` },
    ]);
    await makeDue(a!);
    expect(await releaseDueDelayed(t.pool)).toBe(1);
    const again = await claimOne('q.free');
    expect([again.id, again.attempt, again.lease_token === claimed.lease_token]).toEqual([a, 2, false]);
  });

  it('spaces retries exponentially, capped, with jitter', async () => {
    const { rows: [row] } = await t.pool.query(`
      select min(d1) as min1, max(d1) as max1, min(d3) as min3, max(d3) as max3, min(d20) as min20, max(d20) as max20
      from (select usher.retry_backoff_seconds(a, 1)::float8 as d1, usher.retry_backoff_seconds(a, 3)::float8 as d3,
                   usher.retry_backoff_seconds(a, 20)::float8 as d20
            from usher.actions a, generate_series(1, 500) where a.ref = 'p.a') s`);
    expect(row.min1).toBeGreaterThanOrEqual(0.8);
    expect(row.max1).toBeLessThanOrEqual(1.2);
    expect(row.min3).toBeGreaterThanOrEqual(3.2);
    expect(row.max3).toBeLessThanOrEqual(4.8);
    expect(row.min20).toBeGreaterThanOrEqual(240);
    expect(row.max20).toBeLessThanOrEqual(360);
    expect(row.max1 - row.min1).toBeGreaterThan(0.2);
  });
});

describe('delayed starts', () => {
  it('keeps an execution with a future run_at out of its lane, then lets it join at the back when run_at comes', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a1', 'p.a', 1)`);
    const [later] = await insert('p.a', 1, 1);
    const [b, c] = await insert('p.a', 2);
    expect(await rows('select status, lane_key, queue_position from usher.executions where id = $1', [later]))
      .toEqual([{ status: 'delayed', lane_key: 'action:p.a', queue_position: null }]);
    await admitQueued(t.pool);
    expect(await releaseDueDelayed(t.pool)).toBe(0);
    expect(await statusOf([later!, b!, c!])).toEqual(['delayed', 'scheduled', 'requested']);
    await makeDue(later!);
    expect(await releaseDueDelayed(t.pool)).toBe(1);
    const [joined] = await rows('select status, queue_position::bigint > $2::bigint as behind_c from usher.executions where id = $1', [later, c]);
    expect(joined).toEqual({ status: 'requested', behind_c: true });
    await calls.completeExecution(t.pool, await claimOne('p.a'), 'null');
    expect(await statusOf([later!, b!, c!])).toEqual(['requested', 'completed', 'scheduled']);
  });

  it('admits a delayed execution of an action without policy straight away when its time comes', async () => {
    const [a] = await insert('q.free', 1, 1);
    await makeDue(a!);
    await releaseDueDelayed(t.pool);
    expect(await rows('select status, lane_key, scheduled_at is not null as admitted from usher.executions where id = $1', [a]))
      .toEqual([{ status: 'scheduled', lane_key: null, admitted: true }]);
  });
});

describe('pauses', () => {
  it('holds a paused action\'s executions in order while others of its pack lane pass, and resumes in order', async () => {
    await t.pool.query(`insert into usher.policies (ref, pack_ref, threshold) values ('pack-p', 'p', 5)`);
    const [a1] = await insert('p.a', 1);
    const [b1] = await insert('p.b', 1);
    const [a2] = await insert('p.a', 1);
    await t.pool.query(`select usher.pause_action('p.a', 'maintenance')`);
    await admitQueued(t.pool);
    expect(await statusOf([a1!, b1!, a2!])).toEqual(['requested', 'scheduled', 'requested']);
    expect(await rows(`select action_ref, paused from usher.queue_stats order by action_ref`)).toEqual([
      { action_ref: 'p.a', paused: true }, { action_ref: 'p.b', paused: false }, { action_ref: 'q.free', paused: false },
    ]);
    await t.pool.query(`select usher.resume_action('p.a')`);
    await admitQueued(t.pool);
    const { rows: admitted } = await t.pool.query(`select id from usher.executions where status = 'scheduled' order by scheduled_at, queue_position`);
    expect(admitted.map((row) => row.id)).toEqual([b1, a1, a2]);
  });

  it('queues a paused action without policy in a lane of its own until resumed, and pauses whole packs', async () => {
    await t.pool.query(`select usher.pause_pack('q', 'deploy')`);
    const [a] = await insert('q.free', 1);
    expect(await rows('select status, lane_key from usher.executions where id = $1', [a])).toEqual([{ status: 'requested', lane_key: 'action:q.free' }]);
    await admitQueued(t.pool);
    expect(await statusOf([a!])).toEqual(['requested']);
    expect(await rows(`select usher.resume_pack('q') as resumed`)).toEqual([{ resumed: true }]);
    await admitQueued(t.pool);
    expect(await statusOf([a!])).toEqual(['scheduled']);
  });

  it('postpones an execution that hit an upstream limit: back at the head, no attempt charged, lane paused until then', async () => {
    await t.pool.query(`update usher.actions set max_retries = 0 where ref = 'p.a';
      insert into usher.policies (ref, action_ref, threshold) values ('a2', 'p.a', 2);`);
    const [a, b, c] = await insert('p.a', 3);
    await admitQueued(t.pool);
    const first = await claimOne('p.a');
    const until = new Date(Date.now() + 3_600_000);
    expect(await calls.postponeExecution(t.pool, first, until, 'HTTP 429')).toBe('requested');
    expect(await rows(`select status, attempt from usher.executions where id = $1`, [a])).toEqual([{ status: 'requested', attempt: 0 }]);
    expect(await rows(`select paused_until = $1::timestamptz as until_ok, pause_reason from usher.lane_stats`, [until]))
      .toEqual([{ until_ok: true, pause_reason: 'HTTP 429' }]);
    await admitQueued(t.pool);
    expect(await statusOf([a!, b!, c!])).toEqual(['requested', 'scheduled', 'requested']);
    await t.pool.query(`select usher.resume_lane('action:p.a')`);
    await admitQueued(t.pool);
    expect(await statusOf([a!, b!, c!])).toEqual(['scheduled', 'scheduled', 'requested']);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});

describe('waiting-time limit', () => {
  it('cancels executions that waited longer than queue_timeout_seconds, saying so, and leaves the rest in order', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, queue_timeout_seconds) values ('a1', 'p.a', 1, 60)`);
    const [a, b, c] = await insert('p.a', 3);
    await admitQueued(t.pool);
    await t.pool.query(`update usher.executions set queued_at = queued_at - interval '61 seconds' where id = $1`, [b]);
    expect(await cancelOverdueWaiting(t.pool)).toBe(1);
    expect(await rows('select id, status, result from usher.executions order by id')).toEqual([
      { id: a, status: 'scheduled', result: null },
      { id: b, status: 'cancelled', result: { reason: 'Waited longer than queue_timeout_seconds = 60 in lane action:p.a (policy a1)', policy_ref: 'a1' } },
      { id: c, status: 'requested', result: null },
    ]);
  });
});

describe('idempotency keys', () => {
  it('returns the execution already holding a key, even to 20 concurrent callers, and allows the key again once it has ended', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, () =>
      enqueue(t.pool, { action_ref: 'q.free', params: { order: 7 }, idempotency_key: 'order-7' })));
    expect(new Set(results.map((row) => row.id)).size).toBe(1);
    expect(await rows(`select count(*)::int as n from usher.executions where idempotency_key = 'order-7'`)).toEqual([{ n: 1 }]);

    const mixed = await enqueueMany(t.pool, [
      { action_ref: 'q.free', idempotency_key: 'order-7' },
      { action_ref: 'q.free', idempotency_key: 'order-8' },
      { action_ref: 'q.free' },
    ]);
    expect(mixed[0]!.id).toBe(results[0]!.id);
    expect([mixed[1]!.idempotency_key, mixed[2]!.idempotency_key]).toEqual(['order-8', null]);

    const error = await t.pool.query(`insert into usher.executions (action_ref, idempotency_key) values ('q.free', 'order-7')`)
      .catch((e: unknown) => e as { message: string; constraint: string });
    expect(error).toMatchObject({ constraint: 'executions_idempotency_key_active' });

    await calls.completeExecution(t.pool, await claimOne('q.free'), 'null');
    const after = await enqueue(t.pool, { action_ref: 'q.free', idempotency_key: 'order-7' });
    expect(after.id).not.toBe(results[0]!.id);
  });
});
