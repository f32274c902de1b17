/**
 * RELIABILITY T12: an enqueue racing the release of a lane's only slot (the lost wake-up Solid Queue
 * had). The completion of A frees the slot of a threshold-1 lane while the transaction inserting B
 * is still open: the completion cannot see B, so it admits nothing. B must not then wait for the
 * executor's poll (60 s here): its commit announces it, and the executor admits it at once.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';

const ROUNDS = 10;
const POLL_MS = 60_000;
let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, { name: 'race', host: 'test', pid: 1, concurrency: 1, actions: [{ ref: 'w.race' }] });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('race-one', 'w.race', 1)`);
});
afterAll(async () => {
  await killAll();
  await t.drop();
});

const statusOf = async (id: string) => (await t.pool.query<{ status: string }>('select status from usher.executions where id = $1', [id])).rows[0]!.status;

it(`admits an execution whose insert commits just after the only slot was released, on its commit and not the poll (${ROUNDS} rounds)`, async () => {
  await startExecutor(t.url, { USHER_POLL_INTERVAL_MS: String(POLL_MS) });
  const producer = await t.connect();
  const waits: number[] = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    const { rows: [a] } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('w.race') returning id`);
    await waitFor(async () => (await statusOf(a!.id)) === 'scheduled', { what: `A of round ${round} admitted`, timeoutMs: 5_000 });
    const [claim] = await calls.claimScheduled(t.pool, workerId, ['w.race'], 1, 30);
    expect(claim!.id).toBe(a!.id);

    await producer.query('begin');
    const { rows: [b] } = await producer.query<{ id: string }>(`insert into usher.executions (action_ref) values ('w.race') returning id`);
    // The slot is released and nothing is admitted: B is not visible yet.
    expect(await calls.completeExecution(t.pool, claim!, '{}')).toBe('completed');
    expect((await t.pool.query(`select count(*)::int as n from usher.executions where status in ('scheduled', 'running')`)).rows)
      .toEqual([{ n: 0 }]);
    const committedAt = performance.now();
    await producer.query('commit');
    await waitFor(async () => (await statusOf(b!.id)) === 'scheduled', { what: `B of round ${round} admitted`, timeoutMs: 5_000, intervalMs: 5 });
    waits.push(performance.now() - committedAt);

    const [next] = await calls.claimScheduled(t.pool, workerId, ['w.race'], 1, 30);
    expect(next!.id).toBe(b!.id);
    expect(await calls.completeExecution(t.pool, next!, '{}')).toBe('completed');
  }
  console.log(`enqueue racing release: B admitted ${waits.map((ms) => ms.toFixed(0)).join(', ')} ms after its commit (poll ${POLL_MS} ms)`);
  expect(waits).toHaveLength(ROUNDS);
  expect((await t.pool.query('select lane_key, active_count from usher.lanes')).rows).toEqual([{ lane_key: 'action:w.race', active_count: 0 }]);
  expect((await t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);
});
