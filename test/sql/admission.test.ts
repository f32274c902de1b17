/**
 * Admission, slots and every state transition, driven through the SQL functions directly so each
 * interleaving is chosen by the test.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { admitQueued, expireRunningExecutions } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import type { ClaimedExecution } from '../../src/queue/types.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-test', host: 'test', pid: 1, concurrency: 100,
    actions: [{ ref: 'p.a' }, { ref: 'p.b' }, { ref: 'q.c' }],
  });
});
afterAll(() => t.drop());
beforeEach(async () => {
  await t.pool.query('delete from usher.executions; delete from usher.lanes; delete from usher.policies;');
});

async function insert(actionRef: string, count: number, params: (i: number) => object = (i) => ({ n: i })): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params)
     select $1, p from jsonb_array_elements($2::jsonb) p returning id`,
    [actionRef, JSON.stringify(Array.from({ length: count }, (_, i) => params(i + 1)))],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

async function statuses(): Promise<Record<string, string>> {
  const { rows } = await t.pool.query<{ id: string; status: string }>('select id, status from usher.executions order by id');
  return Object.fromEntries(rows.map((row) => [row.id, row.status]));
}

async function idsWith(status: string): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>('select id from usher.executions where status = $1 order by id', [status]);
  return rows.map((row) => row.id);
}

async function claim(actions: string[], limit = 10): Promise<ClaimedExecution[]> {
  return calls.claimScheduled(t.pool, workerId, actions, limit, 30);
}

async function activeCount(laneKey: string): Promise<number | undefined> {
  const { rows } = await t.pool.query<{ active_count: number }>('select active_count from usher.lanes where lane_key = $1', [laneKey]);
  return rows[0]?.active_count;
}

describe('admission into slots', () => {
  it('admits the oldest waiting executions into free slots, never past the threshold', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a2', 'p.a', 2)`);
    const ids = await insert('p.a', 5);
    expect(await idsWith('requested')).toEqual(ids);
    expect(await admitQueued(t.pool)).toEqual({ lanes_visited: 1, admitted: 2 });
    expect(await idsWith('scheduled')).toEqual(ids.slice(0, 2));
    // A second pass finds the lane full and does not even visit it.
    expect(await admitQueued(t.pool)).toEqual({ lanes_visited: 0, admitted: 0 });
    expect(await activeCount('action:p.a')).toBe(2);
  });

  it('releases the slot and admits the next execution in the transaction that completes one', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a1', 'p.a', 1)`);
    const ids = await insert('p.a', 3);
    await admitQueued(t.pool);
    const [first] = await claim(['p.a']);
    expect(first!.id).toBe(ids[0]);
    expect(await calls.completeExecution(t.pool, first!, '{"ok": true}')).toBe('completed');
    expect(await statuses()).toEqual({ [ids[0]!]: 'completed', [ids[1]!]: 'scheduled', [ids[2]!]: 'requested' });
    const { rows } = await t.pool.query(
      `select (select scheduled_at from usher.executions where id = $2) > completed_at as after, result
       from usher.executions where id = $1`, [ids[0], ids[1]]);
    expect(rows[0]).toEqual({ after: true, result: { ok: true } });
    expect(await activeCount('action:p.a')).toBe(1);
  });

  it('turns away what cannot wait: method cancel with no free slot, and a lane past max_queue_length', async () => {
    await t.pool.query(`
      insert into usher.policies (ref, action_ref, threshold, method) values ('a-cancel', 'p.a', 1, 'cancel');
      insert into usher.policies (ref, action_ref, threshold, max_queue_length) values ('b-cap', 'p.b', 1, 2);`);
    const a = await insert('p.a', 3);
    const b = await insert('p.b', 5);
    await admitQueued(t.pool);
    const { rows } = await t.pool.query<{ id: string; status: string; reason: string | null }>(
      `select id, status, result->>'reason' as reason from usher.executions order by id`);
    expect(rows).toEqual([
      { id: a[0], status: 'scheduled', reason: null },
      { id: a[1], status: 'cancelled', reason: 'No free slot for action p.a: lane action:p.a is at its threshold of 1 and policy a-cancel cancels instead of queueing' },
      { id: a[2], status: 'cancelled', reason: 'No free slot for action p.a: lane action:p.a is at its threshold of 1 and policy a-cancel cancels instead of queueing' },
      { id: b[0], status: 'scheduled', reason: null },
      { id: b[1], status: 'requested', reason: null },
      { id: b[2], status: 'requested', reason: null },
      { id: b[3], status: 'cancelled', reason: 'Queue full for action p.b: lane action:p.b already holds 2 waiting executions (policy b-cap)' },
      { id: b[4], status: 'cancelled', reason: 'Queue full for action p.b: lane action:p.b already holds 2 waiting executions (policy b-cap)' },
    ]);
    const { rows: ended } = await t.pool.query(`select count(*)::int as n from usher.executions where status = 'cancelled' and completed_at is null`);
    expect(ended[0].n).toBe(0);
  });

  it('counts a pack or global threshold across its whole scope, in one FIFO lane, and lets the narrowest scope win', async () => {
    await t.pool.query(`insert into usher.policies (ref, pack_ref, threshold) values ('pack-p', 'p', 2)`);
    const [a1] = await insert('p.a', 1);
    const [b1] = await insert('p.b', 1);
    const [a2] = await insert('p.a', 1);
    const [c1] = await insert('q.c', 1);
    await admitQueued(t.pool);
    const { rows } = await t.pool.query(`select id, status, lane_key from usher.executions order by id`);
    expect(rows).toEqual([
      { id: a1, status: 'scheduled', lane_key: 'pack:p' },
      { id: b1, status: 'scheduled', lane_key: 'pack:p' },
      { id: a2, status: 'requested', lane_key: 'pack:p' },
      { id: c1, status: 'scheduled', lane_key: null },
    ]);

    await t.pool.query(`
      insert into usher.policies (ref, threshold) values ('everything', 1);
      insert into usher.policies (ref, action_ref, threshold, priority) values ('a-low', 'p.a', 5, 1), ('a-high', 'p.a', 3, 2);`);
    const { rows: lanes } = await t.pool.query(
      `insert into usher.executions (action_ref) values ('p.a'), ('p.b'), ('q.c') returning action_ref, lane_key`);
    expect(lanes).toEqual([
      { action_ref: 'p.a', lane_key: 'action:p.a' },
      { action_ref: 'p.b', lane_key: 'pack:p' },
      { action_ref: 'q.c', lane_key: 'global' },
    ]);
    const { rows: policy } = await t.pool.query(`select (usher.lane_policy('action:p.a')).ref`);
    expect(policy[0].ref).toBe('a-high');
  });

  it('gives each combination of grouping parameters its own lane, a missing path counting as null', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('per-host', 'p.a', 1, '{host,target.region}')`);
    await insert('p.a', 5, (i) => [{ host: 'x', target: { region: 'eu' } }, { host: 'y', target: { region: 'eu' } }, { host: 'x', target: { region: 'eu' } }, {}, { host: 'y' }][i - 1]!);
    await admitQueued(t.pool);
    const { rows } = await t.pool.query(`select lane_key, status from usher.executions order by id`);
    expect(rows).toEqual([
      { lane_key: 'action:p.a#["x", "eu"]', status: 'scheduled' },
      { lane_key: 'action:p.a#["y", "eu"]', status: 'scheduled' },
      { lane_key: 'action:p.a#["x", "eu"]', status: 'requested' },
      { lane_key: 'action:p.a#[null, null]', status: 'scheduled' },
      { lane_key: 'action:p.a#["y", null]', status: 'scheduled' },
    ]);
  });

  it('applies a threshold changed with UPDATE at once: raising admits, lowering lets running ones finish', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 1)`);
    const ids = await insert('p.a', 6);
    await admitQueued(t.pool);
    await t.pool.query(`update usher.policies set threshold = 4 where ref = 'a'`);
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual(ids.slice(0, 4));
    const running = await claim(['p.a']);
    expect(running.map((c) => c.id)).toEqual(ids.slice(0, 4));

    await t.pool.query(`update usher.policies set threshold = 2 where ref = 'a'`);
    expect(await checkInvariants(t.pool)).toEqual([]);
    await calls.completeExecution(t.pool, running[0]!, 'null');
    await calls.completeExecution(t.pool, running[1]!, 'null');
    await admitQueued(t.pool);
    expect(await idsWith('requested')).toEqual(ids.slice(4));
    await calls.completeExecution(t.pool, running[2]!, 'null');
    expect(await idsWith('scheduled')).toEqual([ids[4]]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('ignores a disabled policy when placing new executions: the next scope out governs them', async () => {
    await t.pool.query(`
      insert into usher.policies (ref, action_ref, threshold, enabled) values ('a-off', 'p.a', 1, false);
      insert into usher.policies (ref, pack_ref, threshold) values ('pack-p', 'p', 2);`);
    const { rows } = await t.pool.query(`insert into usher.executions (action_ref) values ('p.a') returning lane_key`);
    expect(rows).toEqual([{ lane_key: 'pack:p' }]);
    const { rows: stats } = await t.pool.query(`select max_concurrent from usher.queue_stats where action_ref = 'p.a'`);
    expect(stats).toEqual([{ max_concurrent: 2 }]);
  });

  it('removes lane rows that have been idle long enough, and keeps those with work', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('per-host', 'p.a', 1, '{host}')`);
    await insert('p.a', 3, (i) => ({ host: `h${i}` }));
    await insert('p.a', 1, () => ({ host: 'h1' }));
    await admitQueued(t.pool);
    for (const claimed of await claim(['p.a'])) {
      if ((claimed.params as { host: string }).host !== 'h1') await calls.completeExecution(t.pool, claimed, 'null');
    }
    await t.pool.query(`update usher.lanes set updated_at = now() - interval '1 hour'`);
    const { rows: [deleted] } = await t.pool.query(`select usher.delete_idle_lanes(60) as n`);
    expect(deleted.n).toBe(2);
    const { rows } = await t.pool.query(`select lane_key, active_count from usher.lanes order by lane_key`);
    expect(rows).toEqual([{ lane_key: 'action:p.a#["h1"]', active_count: 1 }]);
  });

  it('drains a lane whose policy is disabled, as if it had no limit', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 1)`);
    const ids = await insert('p.a', 4);
    await admitQueued(t.pool);
    await t.pool.query(`update usher.policies set enabled = false where ref = 'a'`);
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual(ids);
  });
});

describe('marks are fenced by the lease token', () => {
  it('refuses a mark with a stale token, and a second mark after the first', async () => {
    const [id] = await insert('q.c', 1);
    const [claimed] = await claim(['q.c']);
    const stale = { ...claimed!, lease_token: '00000000-0000-4000-8000-000000000000' };
    expect(await calls.completeExecution(t.pool, stale, '{"stale": true}')).toBeNull();
    expect(await calls.failExecution(t.pool, claimed!, 'TypeError: boom', '{"error": {}}')).toBe('failed');
    expect(await calls.completeExecution(t.pool, claimed!, '{"late": true}')).toBeNull();
    const { rows } = await t.pool.query(`select status, error, result, lease_token from usher.executions where id = $1`, [id]);
    expect(rows[0]).toEqual({ status: 'failed', error: 'TypeError: boom', result: { error: {} }, lease_token: null });
  });

  it('abandons an execution whose lease expired, frees its slot for the next, and then refuses the late worker', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 1)`);
    const ids = await insert('p.a', 2);
    await admitQueued(t.pool);
    const [first] = await claim(['p.a']);
    await t.pool.query(`update usher.executions set lease_expires_at = clock_timestamp() - interval '1 second' where id = $1`, [first!.id]);
    expect(await expireRunningExecutions(t.pool, 30)).toBe(1);
    const { rows } = await t.pool.query(`select status, error, completed_at is not null as ended from usher.executions where id = $1`, [first!.id]);
    expect(rows[0]).toEqual({ status: 'abandoned', error: `lease expired: worker ${workerId} stopped renewing it`, ended: true });
    expect(await idsWith('scheduled')).toEqual([ids[1]]);
    expect(await calls.completeExecution(t.pool, first!, 'null')).toBeNull();
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('times out an execution that ran past timeout_seconds plus the grace, even with a live lease', async () => {
    const { rows: [row] } = await t.pool.query(`insert into usher.executions (action_ref, timeout_seconds) values ('q.c', 1) returning id`);
    await claim(['q.c']);
    await t.pool.query(`update usher.executions set started_at = clock_timestamp() - interval '10 seconds' where id = $1`, [row.id]);
    expect(await expireRunningExecutions(t.pool, 5)).toBe(1);
    const { rows } = await t.pool.query(`select status, error from usher.executions where id = $1`, [row.id]);
    expect(rows[0]).toEqual({ status: 'timeout', error: 'ran past timeout_seconds = 1 and its worker did not stop it' });
  });

  it('hands a running execution back to the head of its lane on shutdown, keeping its slot and charging no attempt', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 1)`);
    const ids = await insert('p.a', 2);
    await admitQueued(t.pool);
    const [first] = await claim(['p.a']);
    expect(await calls.handBackExecution(t.pool, first!)).toBe('scheduled');
    const { rows } = await t.pool.query(`select id, status, attempt, worker_id, lease_token from usher.executions order by id`);
    expect(rows).toEqual([
      { id: ids[0], status: 'scheduled', attempt: 0, worker_id: null, lease_token: null },
      { id: ids[1], status: 'requested', attempt: 0, worker_id: null, lease_token: null },
    ]);
    expect(await activeCount('action:p.a')).toBe(1);
    const [again] = await claim(['p.a']);
    expect([again!.id, again!.attempt]).toEqual([ids[0], 1]);
  });
});

describe('cancel', () => {
  it('cancels in every state: waiting, admitted (freeing its slot), running (via canceling), and reports an ended one unchanged', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 2)`);
    const ids = await insert('p.a', 5);
    await admitQueued(t.pool);
    const [running] = await claim(['p.a'], 1);
    const cancel = async (id: string) => (await t.pool.query(`select * from usher.cancel_execution($1)`, [id])).rows[0];

    expect(await cancel(ids[3]!)).toEqual({ id: ids[3], status: 'cancelled', changed: true });
    expect(await cancel(ids[1]!)).toEqual({ id: ids[1], status: 'cancelled', changed: true });
    expect(await idsWith('scheduled')).toEqual([ids[2]]);
    expect(await cancel(running!.id)).toEqual({ id: ids[0], status: 'canceling', changed: true });
    expect(await activeCount('action:p.a')).toBe(2);

    const held = await calls.heartbeatWorker(t.pool, workerId, [running!], 30);
    expect(held.map((lease) => [lease.execution_id, lease.status])).toEqual([[ids[0], 'canceling']]);
    expect(await calls.failExecution(t.pool, running!, 'aborted by cancel', null)).toBe('cancelled');
    expect(await statuses()).toEqual({
      [ids[0]!]: 'cancelled', [ids[1]!]: 'cancelled', [ids[2]!]: 'scheduled', [ids[3]!]: 'cancelled', [ids[4]!]: 'scheduled',
    });
    const { rows } = await t.pool.query(`select result->>'reason' as reason from usher.executions where id = $1`, [ids[0]]);
    expect(rows[0].reason).toBe('cancelled by request');
    expect(await cancel(ids[0]!)).toEqual({ id: ids[0], status: 'cancelled', changed: false });
    expect((await t.pool.query(`select * from usher.cancel_execution(999999)`)).rows).toEqual([]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});

describe('the invariant check', () => {
  it('reports a slot counter that disagrees with the executions holding slots', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 3)`);
    await insert('p.a', 3);
    await admitQueued(t.pool);
    // Slot holders in each status that holds one: running, canceling and scheduled.
    const [, canceled] = await claim(['p.a'], 2);
    await t.pool.query('select usher.cancel_execution($1)', [canceled!.id]);
    expect((await t.pool.query(`select status from usher.executions order by id`)).rows.map((row) => row.status))
      .toEqual(['running', 'canceling', 'scheduled']);
    expect(await checkInvariants(t.pool)).toEqual([]);
    await t.pool.query(`update usher.lanes set active_count = 4 where lane_key = 'action:p.a'`);
    expect(await checkInvariants(t.pool)).toEqual([
      { lane_key: 'action:p.a', problem: 'slot_count_mismatch', detail: 'lanes.active_count is 4 but 3 executions hold a slot' },
    ]);
  });

  it('reports an execution admitted while an older one of its lane waits, and a lane over its threshold', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 1)`);
    const ids = await insert('p.a', 2);
    await t.pool.query(`
      insert into usher.lanes (lane_key, active_count) values ('action:p.a', 2);
      update usher.executions set status = 'scheduled', scheduled_at = clock_timestamp() where id = $1;`.replace('$1', ids[1]!));
    expect(await checkInvariants(t.pool)).toEqual([
      { lane_key: 'action:p.a', problem: 'slot_count_mismatch', detail: 'lanes.active_count is 2 but 1 executions hold a slot' },
      {
        lane_key: 'action:p.a', problem: 'admitted_past_older_waiting',
        detail: `execution ${ids[0]} is waiting while newer execution ${ids[1]} of the same lane holds a slot`,
      },
    ]);
    await t.pool.query(`update usher.executions set status = 'scheduled', scheduled_at = clock_timestamp() where id = $1`, [ids[0]]);
    expect(await checkInvariants(t.pool)).toEqual([
      { lane_key: 'action:p.a', problem: 'over_threshold', detail: '2 executions hold a slot, threshold is 1 (policy a)' },
    ]);
  });
});

describe('under concurrency', () => {
  it('keeps FIFO and the threshold with 8 connections claiming and completing while 2 run admission', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('a', 'p.a', 3)`);
    const total = 600;
    const ids = await insert('p.a', total);
    let done = 0;
    const errors: unknown[] = [];
    const stop = () => done >= total || errors.length > 0;
    const claimer = async () => {
      while (!stop()) {
        try {
          const [claimed] = await claim(['p.a'], 1);
          if (!claimed) {
            await new Promise((resolve) => setImmediate(resolve));
            continue;
          }
          if (await calls.completeExecution(t.pool, claimed, 'null') === 'completed') done += 1;
        } catch (error) {
          errors.push(error);
        }
      }
    };
    const admitter = async () => {
      while (!stop()) {
        try {
          await admitQueued(t.pool);
        } catch (error) {
          errors.push(error);
        }
      }
    };
    await Promise.all([...Array.from({ length: 8 }, claimer), admitter(), admitter()]);
    expect(errors).toEqual([]);
    const { rows } = await t.pool.query<{ id: string; scheduled_at: Date; completed_at: Date; status: string; attempt: number }>(
      `select id, scheduled_at, completed_at, status, attempt from usher.executions order by scheduled_at, id`);
    expect(rows.map((row) => row.id)).toEqual(ids);
    expect(new Set(rows.map((row) => `${row.status}/${row.attempt}`))).toEqual(new Set(['completed/1']));
    // Sweep the slot-holding intervals: the count of holders never exceeds 3.
    const events = rows.flatMap((row) => [
      { at: row.scheduled_at.getTime(), delta: 1 },
      { at: row.completed_at.getTime(), delta: -1 },
    ]).sort((a, b) => a.at - b.at || a.delta - b.delta);
    let holding = 0;
    let peak = 0;
    for (const event of events) {
      holding += event.delta;
      peak = Math.max(peak, holding);
    }
    expect(peak).toBe(3);
    expect(await checkInvariants(t.pool)).toEqual([]);
    expect(await activeCount('action:p.a')).toBe(0);
  });
});
