/**
 * Admission of many lanes at once: usher.release_lane_slots, through complete_and_claim (a batch of
 * completions gives back the slots of many lanes and admits each lane's next), and the executor's
 * admit_queued, which fills plain lanes 100 to a transaction. Lanes under a plain slot limit go
 * through one set-based statement; rate limits, quotas and pauses go lane by lane. Both must admit
 * exactly what admission lane by lane would.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import type { ClaimedExecution } from '../../src/queue/types.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let t: TestDatabase;
let workerId: string;
const ACTIONS = ['lr.grouped', 'lr.wait', 'lr.skip', 'lr.rate', 'lr.other'];

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-lane-release', host: 'test', pid: 1, concurrency: 100, actions: ACTIONS.map((ref) => ({ ref })),
  });
});
afterAll(() => t.drop());
beforeEach(async () => {
  await t.pool.query(`delete from usher.executions; delete from usher.lanes; delete from usher.policies;
    update usher.actions set paused_at = null, retry_delay_seconds = 3600`);
});

async function insert(actionRef: string, params: object[], maxRetries = 0): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params, max_retries)
     select $1, p, $3 from jsonb_array_elements($2::jsonb) with ordinality as t (p, n) order by n returning id`,
    [actionRef, JSON.stringify(params), maxRetries],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

async function statusesOf(ids: string[]): Promise<string[]> {
  const { rows } = await t.pool.query<{ status: string }>(
    'select e.status from unnest($1::bigint[]) with ordinality as i (id, n) join usher.executions e on e.id = i.id order by i.n', [ids]);
  return rows.map((row) => row.status);
}

async function lanes(): Promise<{ lane_key: string; active_count: number; total_admitted: string }[]> {
  const { rows } = await t.pool.query('select lane_key, active_count, total_admitted from usher.lanes order by lane_key');
  return rows;
}

const claimAll = () => calls.claimScheduled(t.pool, workerId, ACTIONS, 100, 30);
/** Completes a batch and claims nothing, so what each lane admitted stays visible as scheduled. */
const complete = (claims: ClaimedExecution[]) => calls.completeAndClaim(
  t.pool, claims.map((claim) => ({ claim, resultJson: 'null' })), { workerId, actionRefs: ACTIONS, limit: 0, leaseSeconds: 30 });
const byId = (claims: ClaimedExecution[], ...ids: string[]) => ids.map((id) => claims.find((claim) => claim.id === id)!);

describe('releasing the slots of many lanes in one batch', () => {
  it('admits each lane of a grouped policy head first, up to its threshold, and records each admission once', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('lr', 'lr.grouped', 2, '{k}')`);
    const ids = await insert('lr.grouped', [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3].map((k) => ({ k })));
    const [alone] = await insert('lr.grouped', [{ k: 4 }]);
    const lane = (k: number) => ids.filter((_, i) => i % 3 === k - 1);
    await admitQueued(t.pool);
    const running = await claimAll();
    expect(running.map((claim) => claim.id)).toEqual([...lane(1).slice(0, 2), ...lane(2).slice(0, 2), ...lane(3).slice(0, 2), alone!].sort((a, b) => Number(a) - Number(b)));

    // Lane 1 frees both slots, lane 2 one, lane 3 none; lane 4 frees its slot and has nothing left to admit.
    const answer = await complete(byId(running, lane(1)[0]!, alone!, lane(2)[0]!, lane(1)[1]!));
    expect(answer.statuses).toEqual(['completed', 'completed', 'completed', 'completed']);
    expect(await statusesOf(lane(1))).toEqual(['completed', 'completed', 'scheduled', 'scheduled']);
    expect(await statusesOf(lane(2))).toEqual(['completed', 'running', 'scheduled', 'requested']);
    expect(await statusesOf(lane(3))).toEqual(['running', 'running', 'requested', 'requested']);
    expect(await lanes()).toEqual([
      { lane_key: 'action:lr.grouped#[1]', active_count: 2, total_admitted: '4' },
      { lane_key: 'action:lr.grouped#[2]', active_count: 2, total_admitted: '3' },
      { lane_key: 'action:lr.grouped#[3]', active_count: 2, total_admitted: '2' },
      { lane_key: 'action:lr.grouped#[4]', active_count: 0, total_admitted: '1' },
    ]);
    const { rows: admissions } = await t.pool.query<{ execution_id: string }>(
      `select execution_id from usher.execution_transitions where status = 'scheduled' and previous_status = 'requested' order by execution_id`);
    expect(admissions.map((row) => row.execution_id)).toEqual(
      [...lane(1), ...lane(2).slice(0, 3), ...lane(3).slice(0, 2), alone!].sort((a, b) => Number(a) - Number(b)));
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('lets a retry in its backoff hold its lane, and admits past it when the policy says skip', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, on_failure) values
      ('lr-wait', 'lr.wait', 2, 'wait'), ('lr-skip', 'lr.skip', 2, 'skip')`);
    const wait = await insert('lr.wait', [{}, {}, {}, {}], 1);
    const skip = await insert('lr.skip', [{}, {}, {}, {}], 1);
    await admitQueued(t.pool);
    const running = await claimAll();
    expect(running).toHaveLength(4);
    // The head of each lane fails with a retry left: it goes back to its place for an hour.
    for (const claim of byId(running, wait[0]!, skip[0]!)) {
      expect(await calls.failExecution(t.pool, claim, 'boom', null)).toBe('requested');
    }
    expect(await statusesOf(wait)).toEqual(['requested', 'running', 'requested', 'requested']);
    expect(await statusesOf(skip)).toEqual(['requested', 'running', 'scheduled', 'requested']);

    await complete(byId(running, wait[1]!, skip[1]!));
    expect(await statusesOf(wait)).toEqual(['requested', 'completed', 'requested', 'requested']);
    expect(await statusesOf(skip)).toEqual(['requested', 'completed', 'scheduled', 'scheduled']);
    expect(await lanes()).toEqual([
      { lane_key: 'action:lr.skip', active_count: 2, total_admitted: '4' },
      { lane_key: 'action:lr.wait', active_count: 0, total_admitted: '2' },
    ]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('admits nothing into a paused lane, and drains a lane whose policy was disabled', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('lr', 'lr.grouped', 1, '{k}')`);
    const ids = await insert('lr.grouped', [{ k: 1 }, { k: 2 }, { k: 1 }, { k: 2 }, { k: 2 }]);
    await admitQueued(t.pool);
    const running = await claimAll();
    expect(running.map((claim) => claim.id)).toEqual([ids[0], ids[1]]);
    await t.pool.query(`select usher.pause_lane('action:lr.grouped#[1]', now() + interval '1 hour')`);
    await t.pool.query(`update usher.policies set enabled = false`);

    await complete(running);
    expect(await statusesOf(ids)).toEqual(['completed', 'completed', 'requested', 'scheduled', 'scheduled']);
    expect(await lanes()).toEqual([
      { lane_key: 'action:lr.grouped#[1]', active_count: 0, total_admitted: '1' },
      { lane_key: 'action:lr.grouped#[2]', active_count: 2, total_admitted: '3' },
    ]);
  });

  it('takes a rate-limited lane, and every lane while an action is paused, lane by lane with the same outcome', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, rate_limit_max_executions, rate_limit_window_seconds, parameters) values
      ('lr-rate', 'lr.rate', 1, 2, 3600, '{}'), ('lr', 'lr.grouped', 1, null, null, '{k}'), ('lr-other', 'lr.other', 1, null, null, '{}')`);
    const rate = await insert('lr.rate', [{}, {}, {}]);
    const grouped = await insert('lr.grouped', [{ k: 1 }, { k: 1 }, { k: 1 }]);
    const other = await insert('lr.other', [{}, {}]);
    await admitQueued(t.pool);
    const running = await claimAll();
    expect(running.map((claim) => claim.id)).toEqual([rate[0], grouped[0], other[0]]);

    // The rate lane's second admission fills its window of 2; the plain lane admits as usual.
    await complete(byId(running, rate[0]!, grouped[0]!));
    expect(await statusesOf(rate)).toEqual(['completed', 'scheduled', 'requested']);
    expect(await statusesOf(grouped)).toEqual(['completed', 'scheduled', 'requested']);
    const { rows: [window] } = await t.pool.query(
      `select cardinality(recent_admissions) as recent, rate_limited_until > now() + interval '59 minutes' as closed
       from usher.lanes where lane_key = 'action:lr.rate'`);
    expect(window).toEqual({ recent: 2, closed: true });

    // With any action paused, every lane goes lane by lane: the paused action's lane admits nothing.
    await t.pool.query(`select usher.pause_action('lr.other')`);
    const next = await claimAll();
    expect(next.map((claim) => claim.id)).toEqual([rate[1], grouped[1]]);
    await complete([...next, ...byId(running, other[0]!)]);
    expect(await statusesOf(rate)).toEqual(['completed', 'completed', 'requested']);
    expect(await statusesOf(grouped)).toEqual(['completed', 'completed', 'scheduled']);
    expect(await statusesOf(other)).toEqual(['completed', 'requested']);
    expect(await lanes()).toEqual([
      { lane_key: 'action:lr.grouped#[1]', active_count: 1, total_admitted: '3' },
      { lane_key: 'action:lr.other', active_count: 0, total_admitted: '1' },
      { lane_key: 'action:lr.rate', active_count: 0, total_admitted: '2' },
    ]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('refuses the whole batch, changing nothing, when a lane holding slots has lost its row', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('lr', 'lr.grouped', 1, '{k}')`);
    const ids = await insert('lr.grouped', [{ k: 1 }, { k: 2 }, { k: 1 }]);
    await admitQueued(t.pool);
    const running = await claimAll();
    await t.pool.query(`delete from usher.lanes where lane_key = 'action:lr.grouped#[2]'`);

    await expect(complete(running)).rejects.toMatchObject({ code: 'XX001', message: 'usher: 1 of 2 lanes releasing slots have no row' });
    expect(await statusesOf(ids)).toEqual(['running', 'running', 'requested']);
    expect(await lanes()).toEqual([{ lane_key: 'action:lr.grouped#[1]', active_count: 1, total_admitted: '1' }]);
  });
});

interface OneLaneCase {
  readonly name: string;
  readonly threshold: number;
  readonly onFailure?: 'wait' | 'skip';
  readonly perLane: number;
  readonly maxRetries?: number;
  /** Done to lanes 1 and 2 alike before the release: the lane's key and its running executions, oldest first. */
  readonly prepare?: (laneKey: string, running: ClaimedExecution[]) => Promise<void>;
  /** Which of the lane's running executions then completes. */
  readonly completes: number;
  readonly statuses: string[];
  readonly active: number;
  readonly admitted: string;
}

/** The lane's head fails with a retry left: back to its place, in its backoff for an hour. */
async function failHead(_laneKey: string, running: ClaimedExecution[]): Promise<void> {
  expect(await calls.failExecution(t.pool, running[0]!, 'boom', null)).toBe('requested');
}

const oneLaneCases: OneLaneCase[] = [
  { name: 'a slot freed under threshold 2', threshold: 2, perLane: 4, completes: 0,
    statuses: ['completed', 'running', 'scheduled', 'requested'], active: 2, admitted: '3' },
  { name: 'a retry in its backoff holds the lane (wait)', threshold: 2, perLane: 4, maxRetries: 1, completes: 1,
    prepare: failHead,
    statuses: ['requested', 'completed', 'requested', 'requested'], active: 0, admitted: '2' },
  { name: 'a retry in its backoff is passed (skip)', threshold: 2, onFailure: 'skip', perLane: 4, maxRetries: 1, completes: 1,
    prepare: failHead,
    statuses: ['requested', 'completed', 'scheduled', 'scheduled'], active: 2, admitted: '4' },
  { name: 'a paused lane admits nothing', threshold: 1, perLane: 2, completes: 0,
    prepare: async (laneKey) => { await t.pool.query(`select usher.pause_lane($1, now() + interval '1 hour')`, [laneKey]); },
    statuses: ['completed', 'requested'], active: 0, admitted: '1' },
  { name: 'a lane whose policy was disabled drains', threshold: 1, perLane: 3, completes: 0,
    prepare: async () => { await t.pool.query(`update usher.policies set enabled = false`); },
    statuses: ['completed', 'scheduled', 'scheduled'], active: 2, admitted: '3' },
  { name: 'a lane with nothing left to admit', threshold: 1, perLane: 1, completes: 0,
    statuses: ['completed'], active: 0, admitted: '1' },
];

describe('one plain lane released alone', () => {
  // Lane 1 releases alone (plain statements of its own); lane 2, set up the same way, releases in a
  // batch with lane 3 (the set-based statement). Both must end exactly alike.
  it.each(oneLaneCases)('admits what the set-based release does: $name', async (c) => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters, on_failure) values ('lr', 'lr.grouped', $1, '{k}', $2)`,
      [c.threshold, c.onFailure ?? 'wait']);
    const lane1 = await insert('lr.grouped', Array.from({ length: c.perLane }, () => ({ k: 1 })), c.maxRetries ?? 0);
    const lane2 = await insert('lr.grouped', Array.from({ length: c.perLane }, () => ({ k: 2 })), c.maxRetries ?? 0);
    const [partner] = await insert('lr.grouped', [{ k: 3 }]);
    await admitQueued(t.pool);
    const running = await claimAll();
    const runningOf = (ids: string[]) => running.filter((claim) => ids.includes(claim.id));
    for (const [k, ids] of [[1, lane1], [2, lane2]] as const) await c.prepare?.(`action:lr.grouped#[${k}]`, runningOf(ids));

    await complete([runningOf(lane1)[c.completes]!]);
    await complete([runningOf(lane2)[c.completes]!, ...byId(running, partner!)]);

    expect(await statusesOf(lane1)).toEqual(c.statuses);
    expect(await statusesOf(lane2)).toEqual(c.statuses);
    const { rows: counters } = await t.pool.query(
      `select active_count, total_admitted, cardinality(recent_admissions) as recent, rate_limited_until, paused_until is not null as paused
       from usher.lanes where lane_key in ('action:lr.grouped#[1]', 'action:lr.grouped#[2]') order by lane_key`);
    expect(counters[0]).toMatchObject({ active_count: c.active, total_admitted: c.admitted });
    expect(counters[1]).toEqual(counters[0]);
    const { rows: admissions } = await t.pool.query<{ lane: string; n: string }>(
      `select e.params ->> 'k' as lane, count(*) as n from usher.execution_transitions r join usher.executions e on e.id = r.execution_id
       where r.status = 'scheduled' and r.previous_status = 'requested' and e.params ->> 'k' in ('1', '2') group by 1 order by 1`);
    expect(admissions.map((row) => row.n)).toEqual([c.admitted, c.admitted]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});

describe('the executor admitting many fresh lanes', () => {
  it('fills plain lanes 100 to a transaction, and a rate-limited lane in a transaction of its own', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters, rate_limit_max_executions, rate_limit_window_seconds) values
      ('lr', 'lr.grouped', 1, '{k}', null, null), ('lr-rate', 'lr.rate', 1, '{}', 5, 3600)`);
    const ids = await insert('lr.grouped', Array.from({ length: 500 }, (_, i) => ({ k: i % 250 })));
    const rate = await insert('lr.rate', [{}, {}]);

    const { rows: [pass] } = await t.pool.query('call usher.admit_queued()');
    expect(pass).toEqual({ lanes_visited: 251, admitted: 251 });
    const { rows: scheduled } = await t.pool.query<{ id: string }>(`select id from usher.executions where status = 'scheduled' order by id`);
    expect(scheduled.map((row) => row.id)).toEqual([...ids.slice(0, 250), rate[0]]);
    // xmin names the transaction that wrote each row: 100 + 100 + 50 plain lanes, then the rate lane.
    const { rows: transactions } = await t.pool.query<{ lanes: string }>(
      `select count(*) as lanes from usher.executions where status = 'scheduled' group by xmin::text order by min(id)`);
    expect(transactions.map((row) => Number(row.lanes))).toEqual([100, 100, 50, 1]);
    const { rows: [counters] } = await t.pool.query(
      `select count(*)::integer as lanes, sum(active_count)::integer as active, sum(total_admitted)::integer as admitted,
         max(cardinality(recent_admissions)) as recent
       from usher.lanes`);
    expect(counters).toEqual({ lanes: 251, active: 251, admitted: 251, recent: 1 });
    expect(await checkInvariants(t.pool)).toEqual([]);

    const { rows: [again] } = await t.pool.query('call usher.admit_queued()');
    expect(again).toEqual({ lanes_visited: 0, admitted: 0 });
  });

  it('lists as candidates the lanes with a free slot or a queue over its max, and marks plain only those with nothing to turn away', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters, max_queue_length, rate_limit_max_executions, rate_limit_window_seconds) values
      ('lr', 'lr.grouped', 1, '{k}', 2, null, null), ('lr-rate', 'lr.rate', 1, '{}', 10, 5, 3600)`);
    // Lane 1 holds its slot with 2 waiting (at its max), lane 2 with 3 waiting (over it), lane 3 has
    // a free slot; the rate-limited lane has a free slot too.
    const [head1] = await insert('lr.grouped', [{ k: 1 }]);
    const [head2] = await insert('lr.grouped', [{ k: 2 }]);
    await admitQueued(t.pool);
    await insert('lr.grouped', [{ k: 1 }, { k: 1 }, { k: 2 }, { k: 2 }, { k: 2 }, { k: 3 }]);
    await insert('lr.rate', [{}]);
    const candidates = async () => (await t.pool.query('select lane_key, plain from usher.admission_candidates()')).rows;

    const { rows: waiting } = await t.pool.query<{ lane_key: string }>('select lane_key from usher.waiting_lane_keys() as w (lane_key)');
    expect(waiting.map((row) => row.lane_key)).toEqual(['action:lr.grouped#[1]', 'action:lr.grouped#[2]', 'action:lr.grouped#[3]', 'action:lr.rate']);
    expect(await candidates()).toEqual([
      { lane_key: 'action:lr.grouped#[2]', plain: false },
      { lane_key: 'action:lr.grouped#[3]', plain: true },
      { lane_key: 'action:lr.rate', plain: false },
    ]);
    await t.pool.query(`select usher.pause_action('lr.other')`);
    expect((await candidates()).map((row) => row.plain)).toEqual([false, false, false]);
    await t.pool.query(`select usher.resume_action('lr.other')`);

    // The pass turns the newest of lane 2 away and admits lanes 3 and rate; then no lane can act.
    const { rows: [pass] } = await t.pool.query('call usher.admit_queued()');
    expect(pass).toEqual({ lanes_visited: 3, admitted: 2 });
    expect(await candidates()).toEqual([]);
    expect(await statusesOf([head1!, head2!])).toEqual(['scheduled', 'scheduled']);
    const { rows: counts } = await t.pool.query<{ status: string; n: number }>(
      `select status, count(*)::integer as n from usher.executions group by status order by status`);
    expect(counts).toEqual([{ status: 'cancelled', n: 1 }, { status: 'requested', n: 4 }, { status: 'scheduled', n: 4 }]);
  });

  it('passes over a lane another session holds, and admits it on a later pass even if its row was deleted meanwhile', async () => {
    await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('lr', 'lr.grouped', 1, '{k}')`);
    // Lane 1 has a row and a free slot (its first execution ended); lane 2 is new.
    await insert('lr.grouped', [{ k: 1 }]);
    await admitQueued(t.pool);
    await complete(await claimAll());
    const waiting = await insert('lr.grouped', [{ k: 1 }, { k: 2 }]);

    // Another session holds lane 1's row, as delete_idle_lanes does just before it deletes it.
    const deleter = await t.connect();
    await deleter.query('begin');
    await deleter.query(`select 1 from usher.lanes where lane_key = 'action:lr.grouped#[1]' for update`);
    const { rows: [first] } = await t.pool.query('call usher.admit_queued()');
    expect(first).toEqual({ lanes_visited: 2, admitted: 1 });
    expect(await statusesOf(waiting)).toEqual(['requested', 'scheduled']);

    await deleter.query(`delete from usher.lanes where lane_key = 'action:lr.grouped#[1]'`);
    await deleter.query('commit');
    await deleter.end();
    const { rows: [second] } = await t.pool.query('call usher.admit_queued()');
    expect(second).toEqual({ lanes_visited: 1, admitted: 1 });
    expect(await statusesOf(waiting)).toEqual(['scheduled', 'scheduled']);
    expect(await lanes()).toEqual([
      { lane_key: 'action:lr.grouped#[1]', active_count: 1, total_admitted: '1' },
      { lane_key: 'action:lr.grouped#[2]', active_count: 1, total_admitted: '1' },
    ]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });
});
