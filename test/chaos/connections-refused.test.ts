/**
 * Scenario 16 (RELIABILITY T20): the server at max_connections. Every Usher connection is cut and
 * every new one is answered as a full server answers (FATAL 53300, "sorry, too many clients
 * already") for a while, by a proxy in front of the test database. The processes must back off
 * (a bounded number of connection attempts a second, no herd), stay up, and recover fully.
 */
import { expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { proxiedUrl, useFaultProxy } from './fault-proxy.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, scale, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const COUNT = scale(600, 3000);
const REFUSED_MS = scale(6_000, 60_000);
const USHER = /^usher-/;

const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries, retry_delay_seconds) values ('c.work', 3, 0.1)`);
const faults = useFaultProxy(() => chaos.t.url);

it(`backs off, stays up and recovers while every connection is refused with 53300 for ${REFUSED_MS / 1000} s`, { timeout: scale(180_000, 400_000) }, async () => {
  const { t } = chaos;
  await usePolicy(t.pool, 'c.work', 'chaos-refused', 5);
  const url = proxiedUrl(t.url, await faults.proxy.listen());
  const env = { USHER_LEASE_SECONDS: '3', CHAOS_RUN_LOG: chaos.log.path };
  const procs = await Promise.all([
    startExecutor(url, env),
    startChaosWorker(url, { concurrency: 4, name: 'a', env }),
    startChaosWorker(url, { concurrency: 4, name: 'b', env }),
  ]);
  const range = await enqueueSpread(t.pool, 'c.work', COUNT, { lanes: 3, ms: [5, 40] });
  const completed = async () => (await t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [range.first, range.last])).rows[0]!.n;
  await waitFor(async () => (await completed()) >= COUNT / 3, { what: 'a third completed', timeoutMs: 60_000 });

  const refusedFrom = Date.now();
  expect(faults.proxy.refuse(USHER, 'too_many_clients')).toBeGreaterThanOrEqual(3);
  await new Promise((resolve) => setTimeout(resolve, REFUSED_MS)); // the fault itself, not a wait for anything
  faults.proxy.allowAll();
  const refusedUntil = Date.now();

  expect(await waitAllEnded(t.pool, range, 120_000)).toEqual({ completed: COUNT });
  for (const proc of procs) expect(proc.child.exitCode, proc.lines.slice(-10).join('\n')).toBeNull();
  expect(procs.flatMap((proc) => proc.lines.filter((line) => line.includes('"code":"53300"'))).length).toBeGreaterThan(0);

  // Connection attempts while refused, per process (its connections carry its name): backoff keeps
  // them to a few a second, where retrying at once would make thousands.
  const seconds = (refusedUntil - refusedFrom) / 1000;
  const attempts = new Map<string, number>();
  for (const [name, times] of faults.proxy.refused) {
    const process = name.replace(/^usher-(worker|executor)(-[a-z]+)?:/, '$1:');
    attempts.set(process, (attempts.get(process) ?? 0) + times.filter((at) => at >= refusedFrom && at <= refusedUntil).length);
  }
  expect([...attempts.keys()].sort()).toEqual([expect.stringMatching(/^executor:/), 'worker:a', 'worker:b']);
  for (const [process, count] of attempts) expect([process, count / seconds <= 10]).toEqual([process, true]);
  for (const proc of procs) expect(events(proc, 'listener:reconnecting').length).toBeGreaterThanOrEqual(1);

  const { rows: retried } = await t.pool.query(
    `select status, count(*)::int as n from usher.execution_attempts where execution_id between $1 and $2 group by status`, [range.first, range.last]);
  expect(retried.filter((row) => row.status !== 'abandoned')).toEqual([]);
  await expectSoundQueue(t.pool, range);
  await expectNoDuplicateRuns(t.pool, chaos.log, range);
  const byConnection = Object.fromEntries([...faults.proxy.refused].map(([name, times]) => [name, times.length]));
  console.info(`refused for ${seconds.toFixed(1)} s: connection attempts per process ${JSON.stringify(Object.fromEntries(attempts))}, by connection ${JSON.stringify(byConnection)} `
    + `(${[...attempts.values()].map((n) => (n / seconds).toFixed(1)).join(', ')} a second); attempts taken back: ${JSON.stringify(retried)}`);
});
