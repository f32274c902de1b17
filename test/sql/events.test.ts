/**
 * The execution event log: every status change recorded in the transaction that makes it, and
 * sequenced into gap-free positions that a reader can resume from without missing a change, even
 * when transactions commit out of id order.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { cancelExecution } from '../../src/queue/cancel.ts';
import { enqueue } from '../../src/queue/enqueue.ts';
import { lastEventPosition, readExecutionEvents, sequenceExecutionEvents } from '../../src/queue/events.ts';
import { admitQueued, deleteOldExecutionEvents } from '../../src/queue/executor-calls.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let t: TestDatabase;
let workerId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-events', host: 'test', pid: 1, concurrency: 100, actions: [{ ref: 'ev.lane' }, { ref: 'ev.free' }],
  });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold) values ('ev.lane-one', 'ev.lane', 1)`);
});
afterAll(() => t.drop());

beforeEach(async () => {
  await t.pool.query('delete from usher.executions; delete from usher.lanes; delete from usher.scope_usage');
  await sequenceExecutionEvents(t.pool);
});

async function eventsAfter(position: string) {
  const events = await readExecutionEvents(t.pool, position, {}, 10_000);
  return events.map((event) => ({
    position: Number(event.position), id: event.execution_id, status: event.status, previous: event.previous_status,
  }));
}

describe('recording and sequencing', () => {
  it('records each change of a lane execution, in order, with positions without gaps', async () => {
    const start = await lastEventPosition(t.pool);
    const first = await enqueue(t.pool, { action_ref: 'ev.lane', params: { n: 1 } });
    const second = await enqueue(t.pool, { action_ref: 'ev.lane', params: { n: 2 } });
    await admitQueued(t.pool);
    const [claim] = await calls.claimScheduled(t.pool, workerId, ['ev.lane'], 10, 30);
    expect(claim?.id).toBe(first.id);
    await calls.completeExecution(t.pool, claim!, '{"ok":true}');
    expect(await sequenceExecutionEvents(t.pool)).toBe(String(Number(start) + 6));

    const events = await eventsAfter(start);
    expect(events.map((event) => event.position)).toEqual([1, 2, 3, 4, 5, 6].map((n) => n + Number(start)));
    // Completing the first admits the second in the same transaction: both changes are recorded.
    expect(events.map(({ id, status, previous }) => [id, previous, status])).toEqual([
      [first.id, null, 'requested'],
      [second.id, null, 'requested'],
      [first.id, 'requested', 'scheduled'],
      [first.id, 'scheduled', 'running'],
      [first.id, 'running', 'completed'],
      [second.id, 'requested', 'scheduled'],
    ]);
  });

  it('records what a batched completion does: each end with the status it left, the admission and the claim it makes', async () => {
    const free = [];
    for (let n = 0; n < 3; n += 1) free.push(await enqueue(t.pool, { action_ref: 'ev.free', params: { n } }));
    const head = await enqueue(t.pool, { action_ref: 'ev.lane', params: { n: 1 } });
    const next = await enqueue(t.pool, { action_ref: 'ev.lane', params: { n: 2 } });
    await admitQueued(t.pool);
    const claims = await calls.claimScheduled(t.pool, workerId, ['ev.free', 'ev.lane'], 10, 30);
    expect(claims.map((claim) => claim.id)).toEqual([...free.map((e) => e.id), head.id]);
    const [running, canceling, stale, laneHead] = claims;
    await sequenceExecutionEvents(t.pool);
    const start = await lastEventPosition(t.pool);

    await cancelExecution(t.pool, canceling!.id);
    const answer = await calls.completeAndClaim(t.pool, [
      { claim: running!, resultJson: 'null' },
      { claim: canceling!, resultJson: 'null' },
      { claim: { ...stale!, lease_token: '00000000-0000-4000-8000-000000000000' }, resultJson: 'null' },
      { claim: laneHead!, resultJson: 'null' },
    ], { workerId, actionRefs: ['ev.lane'], limit: 10, leaseSeconds: 30 });
    expect(answer.statuses).toEqual(['completed', 'completed', null, 'completed']);
    expect(answer.claims.map((claim) => claim.id)).toEqual([next.id]);

    await sequenceExecutionEvents(t.pool);
    const events = await readExecutionEvents(t.pool, start, {}, 100);
    expect(events.map((event) => [event.execution_id, event.previous_status, event.status])).toEqual([
      [canceling!.id, 'running', 'canceling'],
      [running!.id, 'running', 'completed'],
      [laneHead!.id, 'running', 'completed'],
      [canceling!.id, 'canceling', 'completed'],
      [next.id, 'requested', 'scheduled'],
      [next.id, 'scheduled', 'running'],
    ]);
    expect(events.map((event) => event.attempt)).toEqual([1, 1, 1, 1, 0, 1]);
    for (const event of events.slice(1, 4)) expect(event.elapsed_seconds).toBeGreaterThanOrEqual(0);
    expect(events[4]!.elapsed_seconds).toBeGreaterThanOrEqual(0);
    expect(events[5]!.elapsed_seconds).toBeGreaterThanOrEqual(0);
  });

  it('measures the time spent in the previous status', async () => {
    const start = await lastEventPosition(t.pool);
    const free = await enqueue(t.pool, { action_ref: 'ev.free', params: {} });
    const [claim] = await calls.claimScheduled(t.pool, workerId, ['ev.free'], 1, 30);
    await t.pool.query(`update usher.executions set started_at = started_at - interval '2 seconds' where id = $1`, [free.id]);
    await calls.completeExecution(t.pool, claim!, 'null');
    await sequenceExecutionEvents(t.pool);
    const events = await readExecutionEvents(t.pool, start, { action_ref: 'ev.free' }, 100);
    expect(events.map((event) => [event.status, event.attempt])).toEqual([['scheduled', 0], ['running', 1], ['completed', 1]]);
    expect(events[0]!.elapsed_seconds).toBe(0);
    expect(events[1]!.elapsed_seconds).toBeGreaterThanOrEqual(0);
    // started_at was moved 2 s back, so the run took at least 2 s by the row's clock.
    expect(events[2]!.elapsed_seconds).toBeGreaterThanOrEqual(2);
    expect(events[2]!.elapsed_seconds).toBeLessThan(60);
  });

  it('a rolled-back insert leaves no event', async () => {
    const start = await lastEventPosition(t.pool);
    const client = await t.connect();
    await client.query('begin');
    await client.query(`insert into usher.executions (action_ref, params) values ('ev.lane', '{}')`);
    await client.query('rollback');
    expect(await sequenceExecutionEvents(t.pool)).toBe(start);
    expect(await eventsAfter(start)).toEqual([]);
  });

  it('a reader that resumes from its last position gets changes committed late under an older id', async () => {
    const start = await lastEventPosition(t.pool);
    const late = await t.connect();
    await late.query('begin');
    const lateId = (await late.query<{ id: string }>(`insert into usher.executions (action_ref, params) values ('ev.free', '{}') returning id`)).rows[0]!.id;
    const early = await enqueue(t.pool, { action_ref: 'ev.free', params: {} });
    expect(Number(lateId)).toBeLessThan(Number(early.id));

    await sequenceExecutionEvents(t.pool);
    const seen = await eventsAfter(start);
    expect(seen.map((event) => event.id)).toEqual([early.id]);
    const resumeFrom = String(seen.at(-1)!.position);

    await late.query('commit');
    await sequenceExecutionEvents(t.pool);
    const after = await eventsAfter(resumeFrom);
    expect(after.map(({ position, id, status }) => [position, id, status])).toEqual([[Number(resumeFrom) + 1, lateId, 'scheduled']]);
  });

  it('one sequencer at a time: a second call while one holds the lock returns null and moves nothing', async () => {
    await enqueue(t.pool, { action_ref: 'ev.free', params: {} });
    const holder = await t.connect();
    await holder.query('begin');
    await holder.query('select * from usher.execution_event_sequencer for update');
    const before = await lastEventPosition(t.pool);
    expect(await sequenceExecutionEvents(t.pool)).toBeNull();
    const { rows } = await t.pool.query<{ n: number }>('select count(*)::int as n from usher.execution_transitions');
    expect(rows[0]!.n).toBe(1);
    await holder.query('rollback');
    expect(await sequenceExecutionEvents(t.pool)).toBe(String(Number(before) + 1));
  });

  it('notifies usher.execution_events with the last position after sequencing', async () => {
    const listener = await t.connect();
    await listener.query('listen "usher.execution_events"');
    const notified = new Promise<string>((resolve) => listener.on('notification', (message) => resolve(message.payload ?? '')));
    await enqueue(t.pool, { action_ref: 'ev.free', params: {} });
    const last = await sequenceExecutionEvents(t.pool);
    expect(await notified).toBe(last);
  });

  it('retention deletes old events and old unsequenced transitions, keeping recent ones', async () => {
    await enqueue(t.pool, { action_ref: 'ev.free', params: { old: true } });
    await sequenceExecutionEvents(t.pool);
    await enqueue(t.pool, { action_ref: 'ev.free', params: { unsequenced: true } });
    await t.pool.query(`update usher.execution_events set at = at - interval '2 hours'`);
    await t.pool.query(`update usher.execution_transitions set at = at - interval '2 hours'`);
    const recent = await enqueue(t.pool, { action_ref: 'ev.free', params: {} });
    const keptBefore = await t.pool.query<{ n: number }>('select count(*)::int as n from usher.execution_events');
    expect(keptBefore.rows[0]!.n).toBeGreaterThan(0);

    expect(await deleteOldExecutionEvents(t.pool, 3600)).toBe(keptBefore.rows[0]!.n + 1);
    await sequenceExecutionEvents(t.pool);
    const { rows } = await t.pool.query<{ execution_id: string }>('select execution_id::text from usher.execution_events');
    expect(rows.map((row) => row.execution_id)).toEqual([recent.id]);
  });
});
