/**
 * RELIABILITY T07: a NOTIFY committed in the reconnect window of a LISTEN connection. Whatever
 * happened while the connection was down is found by the rescan that `onConnected` starts; what
 * commits after the rescan has begun must arrive as a notification. That holds only if the
 * connection LISTENs before `onConnected` runs. Here the LISTEN connection goes through a proxy
 * that delays every chunk 40 ms, and every call of `onConnected` commits a NOTIFY at once on a
 * direct connection (the latest instant a rescan could miss a change): called before its LISTEN
 * had reached the server, the listener would miss that NOTIFY.
 */
import { expect, it } from 'vitest';
import { Listener } from '../../src/db/listener.ts';
import { createLogger } from '../../src/log.ts';
import { waitFor } from '../support/wait.ts';
import { proxiedUrl, useFaultProxy } from './fault-proxy.ts';
import { useChaosDatabase } from './support.ts';

const RECONNECTS = 8;
const CHANNEL = 'usher.execution_requested';
const APPLICATION = 'usher-test-listen-before-rescan';

const chaos = useChaosDatabase('select 1');
const faults = useFaultProxy(() => chaos.t.url);

it(`delivers a NOTIFY committed as each rescan starts, across ${RECONNECTS} cut LISTEN connections 40 ms away`, { timeout: 60_000 }, async () => {
  faults.proxy.delayMs = 40;
  const url = proxiedUrl(chaos.t.url, await faults.proxy.listen());
  const received = new Set<string>();
  const sent: Promise<unknown>[] = [];
  let connects = 0;
  const listener = new Listener({
    url,
    applicationName: APPLICATION,
    channels: [CHANNEL],
    onNotification: (channel, payload) => {
      if (channel === CHANNEL) received.add(payload);
    },
    onConnected: () => {
      connects += 1;
      sent.push(chaos.t.pool.query('select pg_notify($1, $2)', [CHANNEL, `connect-${connects}`]));
    },
  }, createLogger('silent'));
  listener.start();
  try {
    for (let round = 1; round <= RECONNECTS + 1; round += 1) {
      await waitFor(() => received.has(`connect-${round}`), { what: `the NOTIFY sent as connect ${round} began its rescan`, timeoutMs: 10_000, intervalMs: 5 });
      if (round > RECONNECTS) break;
      const { rows } = await chaos.t.pool.query<{ n: number }>(
        `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = $1`, [APPLICATION]);
      expect(rows).toEqual([{ n: 1 }]);
    }
  } finally {
    await listener.stop();
  }
  await Promise.all(sent);
  expect(connects).toBe(RECONNECTS + 1);
  expect([...received].sort()).toEqual(Array.from({ length: RECONNECTS + 1 }, (_, i) => `connect-${i + 1}`).sort());
});
