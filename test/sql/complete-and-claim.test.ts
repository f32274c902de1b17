/**
 * complete_and_claim: the completion, the admission of the lane's next execution and the claim of
 * the freed worker slot in one transaction, so a busy threshold-1 lane costs one commit per execution.
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
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-complete-and-claim', host: 'test', pid: 1, concurrency: 10,
    actions: [{ ref: 'cc.serial' }, { ref: 'cc.free' }],
  });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('cc-serial', 'cc.serial', 1)`);
});
afterAll(() => t.drop());

beforeEach(async () => {
  await t.pool.query(`delete from usher.executions; delete from usher.lanes;`);
});

const next = (limit: number) => ({ workerId, actionRefs: ['cc.serial'], limit, leaseSeconds: 30 });

async function insert(action: string, count: number): Promise<string[]> {
  const { rows } = await t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params) select $1, jsonb_build_object('n', g) from generate_series(1, $2) g returning id`,
    [action, count],
  );
  return rows.map((row) => row.id).sort((a, b) => Number(a) - Number(b));
}

describe('complete_and_claim', () => {
  it('completes the running execution of a threshold-1 lane and claims the next one of the lane in the same call', async () => {
    const ids = await insert('cc.serial', 3);
    await admitQueued(t.pool);
    const [first] = await calls.claimScheduled(t.pool, workerId, ['cc.serial'], 10, 30);
    expect(first!.id).toBe(ids[0]);

    const answer = await calls.completeAndClaim(t.pool, first!, '{"ok": 1}', next(1));
    expect(answer.status).toBe('completed');
    expect(answer.claims.map((claim) => claim.id)).toEqual([ids[1]]);
    const { rows } = await t.pool.query('select id, status from usher.executions order by id');
    expect(rows.map((row) => row.status)).toEqual(['completed', 'running', 'requested']);
    expect(await checkInvariants(t.pool)).toEqual([]);

    const second = await calls.completeAndClaim(t.pool, answer.claims[0]!, 'null', next(1));
    const third = await calls.completeAndClaim(t.pool, second.claims[0]!, 'null', next(1));
    expect(third.status).toBe('completed');
    expect(third.claims).toEqual([]);
    expect(await checkInvariants(t.pool)).toEqual([]);
  });

  it('claims nothing with limit 0, and a fenced completion still answers null', async () => {
    const [id] = await insert('cc.serial', 2);
    await admitQueued(t.pool);
    const [claim] = await calls.claimScheduled(t.pool, workerId, ['cc.serial'], 10, 30);
    expect(claim!.id).toBe(id);

    const fenced = await calls.completeAndClaim(t.pool, { ...claim!, lease_token: '00000000-0000-0000-0000-000000000000' }, 'null', next(1));
    expect(fenced).toEqual({ status: null, claims: [] });
    const done = await calls.completeAndClaim(t.pool, claim!, 'null', next(0));
    expect(done).toEqual({ status: 'completed', claims: [] });
    const { rows } = await t.pool.query(`select status from usher.executions order by id`);
    expect(rows.map((row) => row.status)).toEqual(['completed', 'scheduled']);
  });
});
