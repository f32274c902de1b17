/**
 * Retention: usher.delete_finished_executions deletes ended executions past their time in
 * batches, with their earlier attempts, and nothing else; the executor runs it (USHER_RETENTION_DAYS).
 * usher.delete_old_audit_rows does the same for the API's audit log (USHER_AUDIT_RETENTION_DAYS).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor } from '../support/processes.ts';
import { claimOne, completeClaimed, failClaimed, registerTestWorker } from '../support/queue-states.ts';
import { events } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;
let kept: Record<string, string>;
let old: string[];

async function ids(): Promise<string[]> {
  return (await t.pool.query<{ id: string }>('select id from usher.executions order by id')).rows.map((row) => row.id);
}

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`
    insert into usher.actions (ref) values ('r.free'), ('r.blocky');
    insert into usher.policies (ref, action_ref, threshold, on_failure) values ('r-blocky', 'r.blocky', 1, 'block');`);
  const worker = await registerTestWorker(t.pool, 'retention', ['r.free', 'r.blocky']);
  const insert = async (action: string) =>
    (await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ($1) returning id`, [action])).rows[0]!.id;
  old = [];
  for (let i = 0; i < 3; i += 1) {
    old.push(await insert('r.free'));
    await completeClaimed(t.pool, await claimOne(t.pool, worker, 'r.free'), { i });
  }
  await t.pool.query(
    `insert into usher.execution_attempts (execution_id, attempt, status, error, ended_at) values ($1, 1, 'failed', 'first try', now() - interval '4 days')`,
    [old[0]]);
  const blocker = await insert('r.blocky');
  await t.pool.query('call usher.admit_queued()');
  await failClaimed(t.pool, await claimOne(t.pool, worker, 'r.blocky'));
  await t.pool.query(`update usher.executions set completed_at = completed_at - interval '3 days' where completed_at is not null`);
  const recent = await insert('r.free');
  await completeClaimed(t.pool, await claimOne(t.pool, worker, 'r.free'), { recent: true });
  kept = { blocker, recent, admitted: await insert('r.free'), waiting: await insert('r.blocky') };
});

afterAll(async () => {
  await killAll();
  await t.drop();
});

describe('usher.delete_finished_executions', () => {
  it('deletes ended executions older than the interval, oldest first, a batch at a time, with their attempts', async () => {
    expect((await t.pool.query(`select usher.delete_finished_executions(interval '2 days', 2) as n`)).rows).toEqual([{ n: 2 }]);
    expect(await ids()).toEqual([old[2], ...Object.values(kept)].sort((a, b) => Number(a) - Number(b)));
    expect((await t.pool.query(`select count(*)::int as n from usher.execution_attempts`)).rows).toEqual([{ n: 0 }]);
    expect((await t.pool.query(`select usher.delete_finished_executions(interval '2 days', 2) as n`)).rows).toEqual([{ n: 1 }]);
    expect((await t.pool.query(`select usher.delete_finished_executions(interval '2 days', 2) as n`)).rows).toEqual([{ n: 0 }]);
  });

  it('keeps what has not ended, what ended recently, and the failed head that blocks its lane', async () => {
    expect((await t.pool.query(`select usher.delete_finished_executions(interval '0', 1000) as n`)).rows).toEqual([{ n: 1 }]);
    const rows = (await t.pool.query(`select id, status from usher.executions order by id`)).rows;
    expect(rows).toEqual([
      { id: kept.blocker, status: 'failed' },
      { id: kept.admitted, status: 'scheduled' },
      { id: kept.waiting, status: 'requested' },
    ]);
    expect((await t.pool.query(`select blocked_by from usher.lanes where blocked_by is not null`)).rows).toEqual([{ blocked_by: kept.blocker }]);
  });

  it('refuses a negative interval or an empty batch', async () => {
    for (const sql of [`select usher.delete_finished_executions(interval '-1 day', 10)`, `select usher.delete_finished_executions(interval '1 day', 0)`]) {
      await expect(t.pool.query(sql)).rejects.toMatchObject({ code: '22023' });
    }
  });
});

describe('usher.delete_departed_workers', () => {
  it('deletes rows of workers stopped or lost longer ago than the interval, and keeps active and recent ones', async () => {
    const register = (name: string) => registerTestWorker(t.pool, name, ['r.free']);
    const [active, stoppedLongAgo, lostLongAgo, stoppedRecently] = [
      await register('w-active'), await register('w-stopped-old'), await register('w-lost-old'), await register('w-stopped-new')];
    await t.pool.query(`update usher.workers set status = 'stopped', stopped_at = now() - interval '3 days' where id = $1`, [stoppedLongAgo]);
    await t.pool.query(`update usher.workers set status = 'lost', stopped_at = now() - interval '3 days' where id = $1`, [lostLongAgo]);
    await t.pool.query(`update usher.workers set status = 'stopped', stopped_at = now() - interval '1 hour' where id = $1`, [stoppedRecently]);
    // The worker that ran the executions above is active too: it stays.
    const before = (await t.pool.query<{ n: number }>('select count(*)::int as n from usher.workers')).rows[0]!.n;
    expect((await t.pool.query(`select usher.delete_departed_workers(interval '2 days') as n`)).rows).toEqual([{ n: 2 }]);
    const left = (await t.pool.query<{ id: string }>('select id from usher.workers where id = any($1::bigint[]) order by id',
      [[active, stoppedLongAgo, lostLongAgo, stoppedRecently]])).rows.map((row) => row.id);
    expect(left).toEqual([active, stoppedRecently]);
    expect((await t.pool.query<{ n: number }>('select count(*)::int as n from usher.workers')).rows[0]!.n).toBe(before - 2);
  });
});

describe('usher.delete_old_audit_rows', () => {
  it('deletes audit rows older than the interval, oldest first, a batch at a time, and refuses bad arguments', async () => {
    await t.pool.query(`insert into usher.api_audit_log (requested_at, actor, operation, method, path, request_id)
      select now() - make_interval(days => d), 'open', 'op-' || d, 'POST', '/x', 'r-' || d from unnest(array[40, 35, 31, 2, 0]) d`);
    const operations = async () => (await t.pool.query<{ operation: string }>('select operation from usher.api_audit_log order by id'))
      .rows.map((row) => row.operation);
    const deleted = async (batch: number) =>
      (await t.pool.query<{ n: number }>(`select usher.delete_old_audit_rows(interval '30 days', $1) as n`, [batch])).rows[0]!.n;
    expect(await deleted(2)).toBe(2);
    expect(await operations()).toEqual(['op-31', 'op-2', 'op-0']);
    expect(await deleted(2)).toBe(1);
    expect(await deleted(2)).toBe(0);
    expect(await operations()).toEqual(['op-2', 'op-0']);
    for (const [interval, batch] of [['-1 day', 10], ['1 day', 0], [null, 10]] as const) {
      await expect(t.pool.query('select usher.delete_old_audit_rows($1::interval, $2)', [interval, batch]))
        .rejects.toThrow(/^usher\.delete_old_audit_rows: older_than must be >= 0 and batch_size >= 1/);
    }
    expect(await operations()).toEqual(['op-2', 'op-0']);
    await t.pool.query('delete from usher.api_audit_log');
  });
});

describe('the executor', () => {
  it('deletes executions past USHER_RETENTION_DAYS on its first sweep, and logs how many', async () => {
    const { rows } = await t.pool.query<{ id: string }>(
      `insert into usher.executions (action_ref) select 'r.free' from generate_series(1, 5) returning id`);
    const worker = await registerTestWorker(t.pool, 'retention-2', ['r.free']);
    for (let i = 0; i < 5; i += 1) await completeClaimed(t.pool, await claimOne(t.pool, worker, 'r.free'), { i });
    await t.pool.query(`update usher.executions set completed_at = completed_at - interval '36 hours' where id = any($1) and id <> $2`,
      [rows.map((row) => row.id), rows[4]!.id]);
    const executor = await startExecutor(t.url, { USHER_RETENTION_DAYS: '1' });
    const logged = await waitFor(() => events(executor, 'retention:deleted')[0], { what: 'retention:deleted' });
    expect(logged).toMatchObject({ count: 4, retention_days: 1 });
    expect((await t.pool.query(`select id from usher.executions where id = any($1)`, [rows.map((row) => row.id)])).rows)
      .toEqual([{ id: rows[4]!.id }]);
  });

  it('deletes audit rows past USHER_AUDIT_RETENTION_DAYS; by default they are kept', async () => {
    expect(loadConfig({}).auditRetentionDays).toBe(0);
    await t.pool.query(`insert into usher.api_audit_log (requested_at, actor, operation, method, path, request_id)
      select now() - make_interval(days => d), 'open', 'op-' || d, 'POST', '/x', 'r-' || d from unnest(array[100, 91, 89]) d`);
    const executor = await startExecutor(t.url, { USHER_RETENTION_DAYS: '0', USHER_AUDIT_RETENTION_DAYS: '90' });
    const logged = await waitFor(() => events(executor, 'retention:audit_deleted')[0], { what: 'retention:audit_deleted' });
    expect(logged).toMatchObject({ count: 2, retention_days: 90 });
    expect((await t.pool.query('select operation from usher.api_audit_log order by id')).rows).toEqual([{ operation: 'op-89' }]);
  });
});
