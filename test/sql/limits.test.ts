/**
 * Rate limits and quotas at the SQL level. Time is moved by rewriting the lane's admission log.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, { name: 'sql-limits', host: 'test', pid: 1, concurrency: 100, actions: [{ ref: 'p.a' }] });
});
afterAll(() => t.drop());

beforeEach(async () => {
  await t.pool.query('delete from usher.executions; delete from usher.lanes; delete from usher.policies; delete from usher.scope_usage;');
});

async function insert(count: number, params: (i: number) => object = (i) => ({ n: i })): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params) select 'p.a', p from jsonb_array_elements($1::jsonb) p returning id`,
    [JSON.stringify(Array.from({ length: count }, (_, i) => params(i + 1)))],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

async function idsWith(status: string): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>('select id from usher.executions where status = $1 order by id', [status]);
  return rows.map((row) => row.id);
}

describe('rate limits', () => {
  it('admits at most max_executions per sliding window, in order, and names the moment the window reopens', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, rate_limit_max_executions, rate_limit_window_seconds) values ('r', 'p.a', 3, 60)`);
    const ids = await insert(5);
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual(ids.slice(0, 3));
    const { rows: [lane] } = await t.pool.query(`
      select cardinality(recent_admissions) as logged,
        rate_limited_until = recent_admissions[1] + interval '60 seconds' as reopens_when_first_leaves,
        usher.next_wakeup_at() = rate_limited_until as executor_wakes_then
      from usher.lanes where lane_key = 'action:p.a'`);
    expect(lane).toEqual({ logged: 3, reopens_when_first_leaves: true, executor_wakes_then: true });

    // Completing does not make room: the window, not the slots, is the limit.
    const claimed = await calls.claimScheduled(t.pool, workerId, ['p.a'], 3, 30);
    for (const claim of claimed) await calls.completeExecution(t.pool, claim, 'null');
    await admitQueued(t.pool);
    expect(await idsWith('requested')).toEqual(ids.slice(3));

    // Two of the three admissions leave the window: two more may start, the oldest first.
    await t.pool.query(`update usher.lanes set recent_admissions = array[clock_timestamp() - interval '61 seconds',
      clock_timestamp() - interval '61 seconds', clock_timestamp() - interval '10 seconds']`);
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual(ids.slice(3, 5));
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('cancels instead of queueing over the rate limit when the policy method is cancel, saying which limit', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, rate_limit_max_executions, rate_limit_window_seconds, method)
      values ('r', 'p.a', 2, 60, 'cancel')`);
    const ids = await insert(3);
    await admitQueued(t.pool);
    const { rows } = await t.pool.query(`select id, status, result from usher.executions order by id`);
    expect(rows.map((row) => row.status)).toEqual(['scheduled', 'scheduled', 'cancelled']);
    expect(rows[2]!.result).toEqual({
      reason: `Rate limit reached for action p.a: lane action:p.a already admitted 2 executions in the last 60 seconds and policy r cancels instead of queueing`,
      policy_ref: 'r',
      limit: 'rate_limit',
    });
    expect(rows[2]!.id).toBe(ids[2]);
  });
});

describe('quotas', () => {
  it('caps executions holding a slot across all lanes of the scope with running_executions; the rest wait', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters, quotas)
      values ('per-host', 'p.a', 1, '{host}', '[{"quota_type": "running_executions", "limit": 2}]')`);
    const ids = await insert(4, (i) => ({ host: `h${i}` }));
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual(ids.slice(0, 2));
    const { rows: [usage] } = await t.pool.query(`select admitted_total::int, active_count from usher.scope_usage where scope_key = 'action:p.a'`);
    expect(usage).toEqual({ admitted_total: 2, active_count: 2 });

    const [first] = await calls.claimScheduled(t.pool, workerId, ['p.a'], 1, 30);
    await calls.completeExecution(t.pool, first!, 'null');
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual([ids[1], ids[2]]);
    await t.pool.query('select * from usher.cancel_execution($1)', [ids[1]]);
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual([ids[2], ids[3]]);
    const { rows: [after] } = await t.pool.query(`select admitted_total::int, active_count from usher.scope_usage`);
    expect(after).toEqual({ admitted_total: 4, active_count: 2 });
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('spends an executions_total budget and cancels the rest with QuotaExceeded naming the quota', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, quotas)
      values ('budget', 'p.a', '[{"quota_type": "executions_total", "limit": 3}]')`);
    const ids = await insert(5);
    await admitQueued(t.pool);
    expect(await idsWith('scheduled')).toEqual(ids.slice(0, 3));
    const { rows } = await t.pool.query(`select id, result from usher.executions where status = 'cancelled' order by id`);
    expect(rows).toEqual(ids.slice(3).map((id) => ({
      id,
      result: {
        reason: 'QuotaExceeded: executions_total of 3 reached for scope action:p.a (policy budget)',
        error: 'QuotaExceeded', quota_type: 'executions_total', limit: 3, policy_ref: 'budget',
      },
    })));
  });

  it('rejects malformed quotas and half a rate limit with messages naming the policy', async () => {
    const bad = async (sql: string) => (await t.pool.query(sql).then(() => undefined, (e: unknown) => e)) as { message: string; constraint: string };
    const unknown = await bad(`insert into usher.policies (ref, quotas) values ('q1', '[{"quota_type": "cpu", "limit": 1}]')`);
    expect(unknown.message).toBe(`usher.policies: policy q1 has an invalid quota {"limit": 1, "quota_type": "cpu"}: each must be {"quota_type": "running_executions" or "executions_total", "limit": a whole number >= 0}`);
    expect((await bad(`insert into usher.policies (ref, quotas) values ('q2', '[{"quota_type": "executions_total", "limit": 1.5}]')`)).constraint).toBe('policies_quotas_valid');
    expect((await bad(`insert into usher.policies (ref, quotas) values ('q3', '[{"quota_type": "executions_total", "limit": 1}, {"quota_type": "executions_total", "limit": 2}]')`)).message)
      .toBe('usher.policies: policy q3 names a quota type twice');
    expect((await bad(`insert into usher.policies (ref, rate_limit_max_executions) values ('q4', 5)`)).constraint).toBe('policies_rate_limit_complete');
  });
});
