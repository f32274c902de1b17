/**
 * Rate limits end to end: real executor and workers, a burst far over the limit.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`insert into usher.actions (ref) values ('t.work') on conflict do nothing`);
});
afterEach(() => killAll());
afterAll(() => t.drop());

it('starts a burst of 300 at no more than 50 per second, in order, waking exactly when each window reopens', async () => {
  await t.pool.query(`insert into usher.policies (ref, action_ref, rate_limit_max_executions, rate_limit_window_seconds)
    values ('fifty-a-second', 't.work', 50, 1)`);
  // Polling every 10 s: keeping pace with a 1 s window needs the executor's own timer.
  const slowPoll = { USHER_POLL_INTERVAL_MS: '10000' };
  await startExecutor(t.url, slowPoll);
  await startWorker(t.url, { concurrency: 25, name: 'rl-1', env: slowPoll });
  await startWorker(t.url, { concurrency: 25, name: 'rl-2', env: slowPoll });
  await t.pool.query(`insert into usher.executions (action_ref, params) select 't.work', jsonb_build_object('n', g) from generate_series(1, 300) g`);

  await waitFor(async () => (await t.pool.query(`select count(*)::int as n from usher.executions where status = 'completed'`)).rows[0].n === 300,
    { what: '300 completions', timeoutMs: 60_000 });

  const { rows: [window] } = await t.pool.query(`
    select max(in_window)::int as busiest
    from (select (select count(*) from usher.executions o
                  where o.scheduled_at > e.scheduled_at - interval '1 second' and o.scheduled_at <= e.scheduled_at) as in_window
          from usher.executions e) s`);
  expect(window.busiest).toBe(50);
  const { rows: order } = await t.pool.query(`select id from usher.executions order by scheduled_at, id`);
  const { rows: byId } = await t.pool.query(`select id from usher.executions order by id`);
  expect(order).toEqual(byId);
  // Six windows' worth: the last fifty start five windows after the first; polling alone would take ~50 s.
  const { rows: [span] } = await t.pool.query(
    `select extract(epoch from max(scheduled_at) - min(scheduled_at))::float8 as seconds
     from usher.executions`);
  expect(span.seconds).toBeGreaterThanOrEqual(5);
  expect(span.seconds).toBeLessThan(7.5);
  expect(await t.pool.query('select * from usher.check_invariants()').then((r) => r.rows)).toEqual([]);
});
