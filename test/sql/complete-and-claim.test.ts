/**
 * complete_and_claim: a batch of completions, the admission of each lane's next executions and the
 * claim of the freed worker slots in one transaction, so a busy worker commits once per batch and a
 * threshold-1 lane once per execution.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { checkInvariants } from '../../src/queue/stats.ts';
import type { ClaimedExecution } from '../../src/queue/types.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { migrate } from '../../src/index.ts';
import { createLogger } from '../../src/log.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { collectNotifications } from '../support/notifications.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-complete-and-claim', host: 'test', pid: 1, concurrency: 10,
    actions: [{ ref: 'cc.serial' }, { ref: 'cc.pair' }, { ref: 'cc.free' }],
  });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('cc-serial', 'cc.serial', 1), ('cc-pair', 'cc.pair', 2)`);
});
afterAll(() => t.drop());

beforeEach(async () => {
  await t.pool.query(`delete from usher.executions; delete from usher.lanes;`);
});

const next = (limit: number, actionRefs = ['cc.serial']) => ({ workerId, actionRefs, limit, leaseSeconds: 30 });
const done = (...claims: ClaimedExecution[]) => claims.map((claim) => ({ claim, resultJson: `{"id": ${claim.id}}` }));

async function insert(action: string, count: number): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params) select $1, jsonb_build_object('n', g) from generate_series(1, $2) g returning id`,
    [action, count],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

async function statuses(): Promise<Record<string, string>> {
  const { rows } = await t.pool.query<{ id: string; status: string }>('select id, status from usher.executions order by id');
  return Object.fromEntries(rows.map((row) => [row.id, row.status]));
}

const scheduledNotifications = () => collectNotifications(t, { 'usher.execution_scheduled': null });

describe('complete_and_claim', () => {
  it('completes the running execution of a threshold-1 lane and claims the next one of the lane in the same call', async () => {
    const ids = await insert('cc.serial', 3);
    await admitQueued(t.pool);
    const [first] = await calls.claimScheduled(t.pool, workerId, ['cc.serial'], 10, 30);
    expect(first!.id).toBe(ids[0]);

    const answer = await calls.completeAndClaim(t.pool, done(first!), next(1));
    expect(answer.statuses).toEqual(['completed']);
    expect(answer.claims.map((claim) => claim.id)).toEqual([ids[1]]);
    expect(await statuses()).toEqual({ [ids[0]!]: 'completed', [ids[1]!]: 'running', [ids[2]!]: 'requested' });
    const { rows: [stored] } = await t.pool.query(`select result, lease_token, completed_at is not null as ended from usher.executions where id = $1`, [ids[0]]);
    expect(stored).toEqual({ result: { id: Number(ids[0]) }, lease_token: null, ended: true });
    expect(await checkInvariants(t.pool)).toEqual([]);

    const second = await calls.completeAndClaim(t.pool, done(answer.claims[0]!), next(1));
    const third = await calls.completeAndClaim(t.pool, done(second.claims[0]!), next(1));
    expect(third).toEqual({ statuses: ['completed'], claims: [] });
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('claims nothing with limit 0, and a fenced completion answers null and changes nothing', async () => {
    const [id, second] = await insert('cc.serial', 2);
    await admitQueued(t.pool);
    const [claim] = await calls.claimScheduled(t.pool, workerId, ['cc.serial'], 10, 30);
    expect(claim!.id).toBe(id);

    const fenced = await calls.completeAndClaim(t.pool, done({ ...claim!, lease_token: '00000000-0000-0000-0000-000000000000' }), next(1));
    expect(fenced).toEqual({ statuses: [null], claims: [] });
    expect(await statuses()).toEqual({ [id!]: 'running', [second!]: 'requested' });
    const answer = await calls.completeAndClaim(t.pool, done(claim!), next(0));
    expect(answer).toEqual({ statuses: ['completed'], claims: [] });
    expect(await statuses()).toEqual({ [id!]: 'completed', [second!]: 'scheduled' });
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('completes a batch across lanes and without a lane; each lane admits its next, the claim takes the freed slots oldest first', async () => {
    const serial = await insert('cc.serial', 3);
    const pair = await insert('cc.pair', 4);
    const free = await insert('cc.free', 2);
    await admitQueued(t.pool);
    const running = await calls.claimScheduled(t.pool, workerId, ['cc.serial', 'cc.pair', 'cc.free'], 10, 30);
    expect(running.map((claim) => claim.id)).toEqual([serial[0], pair[0], pair[1], free[0], free[1]]);
    const byId = new Map(running.map((claim) => [claim.id, claim]));

    // serial[0], both of the pair and one free one end; the other free one still runs.
    const batch = done(byId.get(serial[0]!)!, byId.get(pair[1]!)!, byId.get(free[0]!)!, byId.get(pair[0]!)!);
    const fenced = { claim: { ...byId.get(free[1]!)!, lease_token: '00000000-0000-0000-0000-000000000000' }, resultJson: 'null' };
    const answer = await calls.completeAndClaim(t.pool, [...batch, fenced], next(2, ['cc.serial', 'cc.pair', 'cc.free']));
    expect(answer.statuses).toEqual(['completed', 'completed', 'completed', 'completed', null]);
    // Admitted: serial[1], pair[2], pair[3]; claimed: the two oldest of them.
    expect(answer.claims.map((claim) => claim.id)).toEqual([serial[1], pair[2]]);
    expect(await statuses()).toEqual({
      [serial[0]!]: 'completed', [serial[1]!]: 'running', [serial[2]!]: 'requested',
      [pair[0]!]: 'completed', [pair[1]!]: 'completed', [pair[2]!]: 'running', [pair[3]!]: 'scheduled',
      [free[0]!]: 'completed', [free[1]!]: 'running',
    });
    const { rows: lanes } = await t.pool.query('select lane_key, active_count, total_admitted from usher.lanes order by lane_key');
    expect(lanes).toEqual([
      { lane_key: 'action:cc.pair', active_count: 2, total_admitted: '4' },
      { lane_key: 'action:cc.serial', active_count: 1, total_admitted: '2' },
    ]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('wakes workers only when an execution it admitted is left unclaimed', async () => {
    const notifications = await scheduledNotifications();
    const ids = await insert('cc.serial', 3);
    await admitQueued(t.pool);
    const [first] = await calls.claimScheduled(t.pool, workerId, ['cc.serial'], 10, 30);
    await notifications.settled();

    // The next of the lane is admitted and claimed in the same call: nobody else needs waking.
    const answer = await calls.completeAndClaim(t.pool, done(first!), next(1));
    expect(answer.claims.map((claim) => claim.id)).toEqual([ids[1]]);
    expect(await notifications.settled()).toEqual([]);

    // No claim (limit 0): the admitted one waits as scheduled, and one wake-up goes out for it.
    await calls.completeAndClaim(t.pool, done(answer.claims[0]!), next(0));
    expect(await statuses()).toMatchObject({ [ids[2]!]: 'scheduled' });
    expect(await notifications.settled()).toEqual(['usher.execution_scheduled:']);
  });

  it('announces every completed id in one usher.execution_completed notification', async () => {
    const watcher = await collectNotifications(t, { 'usher.execution_completed': 'select usher.watch_completions()' });
    const ids = await insert('cc.free', 3);
    const claims = await calls.claimScheduled(t.pool, workerId, ['cc.free'], 10, 30);
    await calls.completeAndClaim(t.pool, done(...claims), next(0));
    expect(await watcher.settled()).toEqual([`usher.execution_completed:${ids.join(',')}`]);
  });

  it('refuses arrays of different lengths, naming them', async () => {
    await expect(t.pool.query(
      `select * from usher.complete_and_claim(array[1, 2]::bigint[], array[gen_random_uuid()], array['null'::jsonb], $1, array['cc.free'], 1, 30)`,
      [workerId],
    )).rejects.toThrow('2 ids, 1 lease tokens and 1 results; each id needs its token and result');
  });

  it('is prepared once per connection, and the prepared calls keep working after the functions are replaced', async () => {
    const client = await t.connect();
    const ids = await insert('cc.serial', 3);
    await admitQueued(t.pool);
    const [first] = await calls.claimScheduled(client, workerId, ['cc.serial'], 1, 30);
    const second = await calls.completeAndClaim(client, done(first!), next(1));
    const { rows: prepared } = await client.query<{ name: string }>('select name from pg_prepared_statements order by name');
    expect(prepared.map((row) => row.name)).toEqual(['usher.claim_scheduled', 'usher.complete_and_claim']);

    // A migrate replaces the functions (sql/) under running workers: their prepared calls are planned again, not broken.
    const version = `select xmin::text from pg_proc where oid = 'usher.complete_and_claim(bigint[], uuid[], jsonb[], bigint, text[], integer, integer)'::regprocedure`;
    const { rows: [before] } = await t.pool.query<{ xmin: string }>(version);
    await migrate(t.pool, createLogger('silent'), { forceDefinitions: true });
    const { rows: [after] } = await t.pool.query<{ xmin: string }>(version);
    expect(after!.xmin).not.toBe(before!.xmin);
    const third = await calls.completeAndClaim(client, done(second.claims[0]!), next(1));
    expect(third.statuses).toEqual(['completed']);
    expect(third.claims.map((claim) => claim.id)).toEqual([ids[2]]);
    const { rows: again } = await client.query<{ name: string }>('select name from pg_prepared_statements order by name');
    expect(again.map((row) => row.name)).toEqual(['usher.claim_scheduled', 'usher.complete_and_claim']);
  });
});
