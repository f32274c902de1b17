/**
 * Scenario 5: NOTIFY lost. The LISTEN connections of the executor and the worker are cut and kept
 * from coming back (a proxy refuses them by application_name) while work arrives: polling admits
 * and claims it within the poll interval. Once LISTEN is back, wake-ups are prompt again.
 */
import { expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { proxiedUrl, useFaultProxy } from './fault-proxy.ts';
import { enqueueSpread, expectSoundQueue, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const POLL_MS = 2000;
const LISTEN = /-listen:/;

const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work')`);
const faults = useFaultProxy(() => chaos.t.url);

async function latencies(range: { first: string; last: string }): Promise<{ admit: number; claim: number }[]> {
  const { rows } = await chaos.t.pool.query<{ admit: number; claim: number }>(
    `select (extract(epoch from scheduled_at - greatest(created_at, coalesce(lag(completed_at) over (order by id), created_at))) * 1000)::float8 as admit,
            (extract(epoch from started_at - scheduled_at) * 1000)::float8 as claim
     from usher.executions where id between $1 and $2 order by id`, [range.first, range.last]);
  return rows;
}

it('admits and claims by polling, within the poll interval, while no LISTEN connection can be made', { timeout: 60_000 }, async () => {
  await usePolicy(chaos.t.pool, 'c.work', 'chaos-notify', 1);
  const url = proxiedUrl(chaos.t.url, await faults.proxy.listen());
  const env = { USHER_POLL_INTERVAL_MS: String(POLL_MS) };
  const executor = await startExecutor(url, env);
  const worker = await startChaosWorker(url, { concurrency: 2, name: 'polling', env });
  await waitFor(() => faults.proxy.acceptedMatching(LISTEN) === 2, { what: 'both LISTEN connections through the proxy' });

  expect(faults.proxy.refuse(LISTEN)).toBe(2);
  await waitFor(() => events(executor, 'listener:reconnecting').length > 0 && events(worker, 'listener:reconnecting').length > 0,
    { what: 'both listeners to notice' });
  // Five executions of a threshold-1 lane, one at a time: each needs the executor's admission
  // (or the release in the previous one's completion) and the worker's claim, with no NOTIFY at all.
  const range = await enqueueSpread(chaos.t.pool, 'c.work', 5, { prefix: 'deaf', ms: 50 });
  expect(await waitAllEnded(chaos.t.pool, range, 5 * 2 * POLL_MS + 5000)).toEqual({ completed: 5 });
  expect(faults.proxy.acceptedMatching(LISTEN)).toBe(2);
  const deaf = await latencies(range);
  // The first waited for the executor's poll, every one for the worker's (its own completion wakes it).
  for (const { admit, claim } of deaf) {
    expect(admit).toBeLessThanOrEqual(POLL_MS + 500);
    expect(claim).toBeLessThanOrEqual(POLL_MS + 500);
  }

  faults.proxy.allowAll();
  await waitFor(() => faults.proxy.acceptedMatching(LISTEN) === 4, { what: 'both LISTEN connections back', timeoutMs: 20_000 });
  // Give the new LISTENs their first rescan, then enqueue: NOTIFY wakes both at once.
  await waitFor(async () => (await chaos.t.pool.query(
    `select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like 'usher-%-listen:%' and state = 'idle'`,
  )).rows[0].n === 2, { what: 'both listeners idle' });
  const again = await enqueueSpread(chaos.t.pool, 'c.work', 3, { prefix: 'hearing', ms: 10 });
  expect(await waitAllEnded(chaos.t.pool, again, POLL_MS * 3)).toEqual({ completed: 3 });
  const hearing = await latencies(again);
  const first = hearing[0]!;
  console.info(`NOTIFY lost: admit/claim latencies without LISTEN ${JSON.stringify(deaf.map((l) => [Math.round(l.admit), Math.round(l.claim)]))} ms (poll ${POLL_MS} ms); ` +
    `with LISTEN back ${JSON.stringify(hearing.map((l) => [Math.round(l.admit), Math.round(l.claim)]))} ms`);
  expect(first.admit + first.claim).toBeLessThan(POLL_MS / 2);
  await expectSoundQueue(chaos.t.pool, { first: range.first, last: again.last });
});
