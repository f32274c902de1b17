/**
 * Scenario 22 (RELIABILITY T06): a half-open LISTEN connection. A proxy makes the LISTEN
 * connections of the executor and the worker go silent, with no FIN and no RST, as when a NAT
 * entry is dropped or a peer vanishes: nothing tells the processes. Their pings must find out,
 * within the ping interval (15 s) plus its timeout (5 s), and LISTEN again, so wake-ups are
 * prompt again instead of waiting for the poll.
 */
import { expect, it } from 'vitest';
import { startExecutor } from '../support/processes.ts';
import { events, usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { proxiedUrl, useFaultProxy } from './fault-proxy.ts';
import { enqueueSpread, expectSoundQueue, startChaosWorker, useChaosDatabase, waitAllEnded } from './support.ts';

const POLL_MS = 60_000;
const DETECT_WITHIN_MS = 15_000 + 5_000;
const LISTEN = /-listen:/;

const chaos = useChaosDatabase(`insert into usher.actions (ref) values ('c.work')`);
const faults = useFaultProxy(() => chaos.t.url);

/** Until two LISTEN sessions of this database sit idle, their LISTENs done (a silenced one still counts). */
function listenersIdle(): Promise<unknown> {
  return waitFor(async () => (await chaos.t.pool.query(
    `select count(*)::int as n from pg_stat_activity
     where datname = current_database() and application_name like 'usher-%-listen:%' and state = 'idle' and query ilike 'listen%'`,
  )).rows[0].n >= 2, { what: 'two LISTEN connections idle' });
}

it('finds a silent LISTEN connection by its ping, LISTENs again, and wakes on NOTIFY again', { timeout: 90_000 }, async () => {
  await usePolicy(chaos.t.pool, 'c.work', 'chaos-half-open', 1);
  const url = proxiedUrl(chaos.t.url, await faults.proxy.listen());
  // Polls so long that only a NOTIFY can start anything within the test.
  const env = { USHER_POLL_INTERVAL_MS: String(POLL_MS), USHER_SWEEP_INTERVAL_MS: '200', USHER_LOG_LEVEL: 'debug' };
  const executor = await startExecutor(url, env);
  const worker = await startChaosWorker(url, { concurrency: 2, name: 'half-open', env });
  await waitFor(() => faults.proxy.acceptedMatching(LISTEN) === 2, { what: 'both LISTEN connections through the proxy' });
  // Both done connecting and listening: one silenced halfway through its handshake would fail to connect instead.
  await listenersIdle();

  const silencedAt = Date.now();
  expect(faults.proxy.silence(LISTEN)).toBe(2);
  const listeners = [...faults.proxy.accepted.keys()].filter((name) => LISTEN.test(name));
  expect(listeners).toHaveLength(2);
  // Each process makes its LISTEN connection again, once its ping went unanswered.
  const reconnectedAfter = await waitFor(() => {
    const again = listeners.map((name) => (faults.proxy.accepted.get(name) ?? 0) >= 2);
    return again.every(Boolean) && Date.now() - silencedAt;
  }, { what: 'both LISTEN connections made again', timeoutMs: DETECT_WITHIN_MS + 10_000, intervalMs: 100 }).catch((error: Error) => {
    const listenerLines = [executor, worker].map((proc) => proc.lines.filter((line) => line.includes('"listener:')).join('\n'));
    throw new Error(`${error.message}; silenced at ${new Date(silencedAt).toISOString()}; proxy accepted ${JSON.stringify([...faults.proxy.accepted])}\n${listenerLines.join('\n---\n')}`);
  });
  expect(reconnectedAfter).toBeLessThanOrEqual(DETECT_WITHIN_MS + 3000);
  const timeouts = [executor, worker].map((proc) => events(proc, 'listener:ping_timeout').length);
  await listenersIdle();

  // Admitted by the executor and claimed by the worker on NOTIFY: a minute's poll would come too late.
  const range = await enqueueSpread(chaos.t.pool, 'c.work', 3, { prefix: 'after', ms: 5 });
  expect(await waitAllEnded(chaos.t.pool, range, 10_000)).toEqual({ completed: 3 });
  expect(worker.child.exitCode).toBeNull();
  expect(executor.child.exitCode).toBeNull();
  await expectSoundQueue(chaos.t.pool, range);
  console.info(`half-open LISTEN: both made again ${reconnectedAfter} ms after the silence; ping timeouts logged (executor, worker): ${timeouts.join(', ')}`);
});
