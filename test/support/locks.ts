/** Forcing interleavings: connections that know their backend pid, and waits on what a backend is doing. */
import type pg from 'pg';
import type { TestDatabase } from './database.ts';
import { waitFor } from './wait.ts';

/** A connection of its own, its backend pid, and session settings run first (if any). */
export async function connectionWithPid(t: TestDatabase, settings?: string): Promise<{ client: pg.Client; pid: number }> {
  const client = await t.connect();
  if (settings) await client.query(settings);
  const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
  return { client, pid: rows[0]!.pid };
}

/** Until the backend waits for a lock another transaction holds (or, with `orDone`, has finished its statement). */
export function waitingOnLock(pool: pg.Pool, pid: number, what: string, { orDone = false } = {}): Promise<unknown> {
  return waitFor(async () => (await pool.query(
    `select 1 from pg_stat_activity where pid = $1 and (wait_event_type = 'Lock' or ($2 and state = 'idle'))`, [pid, orDone])).rowCount === 1,
  { what, timeoutMs: 10_000, intervalMs: 10 });
}
