/** NOTIFYs as a test sees them: collected on a connection of its own, settled by a marker. */
import type pg from 'pg';
import type { TestDatabase } from './database.ts';
import { waitFor } from './wait.ts';

export interface Notifications {
  /** The collecting connection (closed with the database, or by the test). */
  readonly client: pg.Client;
  /** `channel:payload` of every notification sent before the call, in commit order; clears them. */
  settled(): Promise<string[]>;
}

/**
 * Starts collecting on `channels` with one statement each: `listen "channel"` by default, or the
 * statement given for a channel (such as `select usher.watch_completions()`).
 */
export async function collectNotifications(t: TestDatabase, channels: Record<string, string | null>): Promise<Notifications> {
  const client = await t.connect();
  const received: string[] = [];
  client.on('notification', (message) => received.push(`${message.channel}:${message.payload ?? ''}`));
  for (const [channel, statement] of Object.entries(channels)) await client.query(statement ?? `listen "${channel}"`);
  const markerChannel = Object.keys(channels)[0]!;
  let markers = 0;
  return {
    client,
    async settled() {
      // Notifications arrive in commit order: once this marker is in, everything sent before it is too.
      const marker = `${markerChannel}:marker-${(markers += 1)}`;
      await t.pool.query('select pg_notify($1, $2)', [markerChannel, marker.slice(markerChannel.length + 1)]);
      await waitFor(() => received.includes(marker), { what: 'marker notification' });
      return received.splice(0).filter((line) => line !== marker);
    },
  };
}
