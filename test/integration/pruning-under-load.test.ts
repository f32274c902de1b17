/**
 * RELIABILITY T30: pruning while the queue is busy. One pruner deletes a batch of old ended
 * executions and then stalls with its transaction open; another prunes everything that has ended,
 * every few milliseconds, while a worker and an executor drain 1,500 executions in 10 lanes of a
 * threshold-3 policy. Nothing of the queue may wait for either pruner, and no execution may be
 * deleted before it has ended.
 */
import type pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';

const LOAD = 1_500;
const OLD = 3_000;
let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`
    insert into usher.actions (ref) values ('t.work'), ('old.done');
    insert into usher.policies (ref, action_ref, threshold, parameters) values ('prune-three', 't.work', 3, '{lane}');
    create table public.pruned (id bigint primary key, status text not null, completed_at timestamptz, deleted_at timestamptz not null, by_pid int not null);
    create function public.record_pruned() returns trigger language plpgsql as $$
    begin
      insert into public.pruned values (old.id, old.status, old.completed_at, clock_timestamp(), pg_backend_pid());
      return old;
    end $$;
    create trigger record_pruned after delete on usher.executions for each row execute function public.record_pruned();`);
  // History: executions that ended an hour ago.
  await t.pool.query(`insert into usher.executions (action_ref) select 'old.done' from generate_series(1, $1)`, [OLD]);
  await t.pool.query(`
    update usher.executions set status = 'completed', result = '{}', completed_at = clock_timestamp() - interval '1 hour'
    where action_ref = 'old.done'`);
});
afterAll(async () => {
  await killAll();
  await t.drop();
});

/** Backends of this database waiting for a lock that `pid` holds. */
async function waitingOn(pool: pg.Pool, pid: number): Promise<{ application_name: string; query: string }[]> {
  const { rows } = await pool.query(
    `select application_name, left(query, 120) as query from pg_stat_activity
     where datname = current_database() and $1 = any (pg_blocking_pids(pid))`, [pid]);
  return rows;
}

it(`drains ${LOAD} executions while one pruner stalls mid-transaction and another prunes every ended row: nothing waits on them, nothing unfinished is deleted`, { timeout: 120_000 }, async () => {
  const stalled = await t.connect();
  const stalledPid = (await stalled.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  await stalled.query('begin');
  const firstBatch = (await stalled.query<{ n: number }>(`select usher.delete_finished_executions(interval '30 minutes', 500) as n`)).rows[0]!.n;
  expect(firstBatch).toBe(500);

  const pruner = await t.connect();
  const prunerPid = (await pruner.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  await Promise.all([startExecutor(t.url), startWorker(t.url, { concurrency: 8 })]);
  const { rows: [range] } = await t.pool.query<{ first: string; last: string }>(
    `with inserted as (
       insert into usher.executions (action_ref, params)
       select 't.work', jsonb_build_object('lane', g % 10, 'n', g, 'ms', 2) from generate_series(0, $1 - 1) g order by g returning id)
     select min(id) as first, max(id) as last from inserted`, [LOAD]);

  let draining = true;
  const blocked: unknown[] = [];
  const pruning = (async () => {
    while (draining) {
      await pruner.query(`select usher.delete_finished_executions(interval '0', 100)`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  const watching = (async () => {
    while (draining) {
      blocked.push(...await waitingOn(t.pool, stalledPid), ...await waitingOn(t.pool, prunerPid));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  // Drained: every execution of the load has ended, or has been pruned after it ended.
  await waitFor(async () => (await t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and completed_at is null`, [range!.first, range!.last],
  )).rows[0]!.n === 0, { what: 'the load to drain', timeoutMs: 90_000, intervalMs: 100 });
  draining = false;
  await Promise.all([pruning, watching]);
  // The stalled pruner was open the whole time.
  expect((await stalled.query<{ state: string }>('select 1 as state')).rows).toEqual([{ state: 1 }]);
  await stalled.query('commit');

  const prunedWhileDraining = (await t.pool.query<{ n: number }>(
    `select count(*)::int as n from public.pruned where id between $1 and $2`, [range!.first, range!.last])).rows[0]!.n;
  console.info(`pruning under load: ${prunedWhileDraining} of ${LOAD} pruned while draining, ${firstBatch} of the history by the stalled pruner`);
  expect(blocked).toEqual([]);
  expect(prunedWhileDraining).toBeGreaterThan(0);
  // Every load execution completed, once: either still in the table or pruned as completed.
  const { rows: [accounted] } = await t.pool.query(
    `select count(*) filter (where e.status = 'completed')::int as kept, count(*) filter (where p.status = 'completed')::int as pruned,
            count(*) filter (where p.id is not null and (p.status <> 'completed' or p.completed_at is null or p.completed_at > p.deleted_at))::int as pruned_unfinished
     from generate_series($1::bigint, $2::bigint) g (id)
     left join usher.executions e on e.id = g.id
     left join public.pruned p on p.id = g.id`, [range!.first, range!.last]);
  expect(accounted).toEqual({ kept: LOAD - prunedWhileDraining, pruned: prunedWhileDraining, pruned_unfinished: 0 });
  // The stalled pruner deleted only old history; the other one passed over the rows it held and took the rest.
  expect((await t.pool.query(
    `select by_pid = $2 as stalled, count(*)::int as n, bool_and(status = 'completed' and completed_at < deleted_at - interval '30 minutes') as old
     from public.pruned where id < $1 group by 1 order by 1`, [range!.first, stalledPid])).rows)
    .toEqual([{ stalled: false, n: OLD - 500, old: true }, { stalled: true, n: 500, old: true }]);
  expect((await t.pool.query('select lane_key, active_count from usher.lanes where active_count <> 0')).rows).toEqual([]);
  expect((await t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);
});
