/**
 * Scenario 20 (RELIABILITY T08): forged and malformed notifications. Postgres has no privilege on
 * NOTIFY channels: any role that can connect can send on Usher's. A role with no grant at all
 * floods them with lies (a cancel of a running execution, a completion of one still running),
 * malformed and maximum-size payloads, and an unknown channel. Usher must read state only from
 * its tables: nothing changes because of a payload, no listener goes down, and a flood of hints
 * costs a bounded number of queries.
 */
import pg from 'pg';
import { expect, it } from 'vitest';
import { createClient } from '../../src/client.ts';
import { startExecutor } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';
import { expectSoundQueue, startChaosWorker, useChaosDatabase } from './support.ts';

const FLOOD = 300;

const chaos = useChaosDatabase(`
  insert into usher.actions (ref) values ('c.work');
  create table public.heartbeats (at timestamptz not null default clock_timestamp());
  create function public.count_heartbeat() returns trigger language plpgsql as $$
  begin
    insert into public.heartbeats default values;
    return null;
  end $$;
  create trigger count_heartbeat after update of heartbeat_at on usher.workers
    for each row when (old.heartbeat_at is distinct from new.heartbeat_at) execute function public.count_heartbeat();`);

it(`changes nothing and stays up under ${FLOOD} forged notifications on each channel from a role with no grants`, { timeout: 90_000 }, async () => {
  const { t } = chaos;
  const role = `forger_${t.name.slice(-12)}`;
  await t.pool.query(`create role ${role} login password 'forger'`);
  try {
    await startExecutor(t.url);
    const worker = await startChaosWorker(t.url, { concurrency: 2, name: 'a' });
    const { rows: [running] } = await t.pool.query<{ id: string }>(
      `insert into usher.executions (action_ref, params) values ('c.work', '{"ms": 4000}') returning id`);
    await waitFor(async () => (await t.pool.query(`select 1 from usher.executions where id = $1 and status = 'running'`, [running!.id])).rowCount === 1,
      { what: 'the execution running' });
    const client = createClient({ connectionString: t.url });
    let resolvedEarly = false;
    const waited = client.waitFor(running!.id, { timeoutMs: 60_000 }).then((execution) => {
      resolvedEarly = execution.status !== 'completed';
      return execution;
    });

    const forgerUrl = new URL(t.url);
    forgerUrl.username = role;
    forgerUrl.password = 'forger';
    const forger = new pg.Client({ connectionString: forgerUrl.toString() });
    await forger.connect();
    // It can read nothing of Usher's.
    await expect(forger.query('select count(*) from usher.executions')).rejects.toThrow(/permission denied/);
    const heartbeatsBefore = Number((await t.pool.query('select count(*) from public.heartbeats')).rows[0].count);
    const floodStarted = performance.now();
    const payloads = [running!.id, '', 'not-an-id', `${running!.id},x,-1,99999999999999999999`, 'x'.repeat(7999), '{"id": 1}', '\u{1F4A5}'];
    for (let i = 0; i < FLOOD; i += 1) {
      const payload = payloads[i % payloads.length]!;
      await forger.query(`select pg_notify('usher.execution_canceling', $1), pg_notify('usher.execution_completed', $1),
        pg_notify('usher.execution_scheduled', $1), pg_notify('usher.execution_requested', $1), pg_notify('usher.policy_changed', $1),
        pg_notify('usher.execution_events', $1), pg_notify('usher.nonsense', $1)`, [payload]);
    }
    const heartbeatsDuring = Number((await t.pool.query('select count(*) from public.heartbeats')).rows[0].count) - heartbeatsBefore;
    const floodMs = performance.now() - floodStarted;
    await forger.end();

    // The lie "cancel it" changed nothing: it ran to the end on its first attempt, and the
    // waiter, told it had completed while it ran, kept waiting for the table to say so.
    const ended = await waited;
    expect(resolvedEarly).toBe(false);
    expect(ended).toMatchObject({ id: running!.id, status: 'completed', attempt: 1 });
    await client.close();
    // The forged cancels naming it asked for a renewal each: they were coalesced, one every 100 ms
    // at most (the heartbeat timer, every 10 s, may add one).
    expect(heartbeatsDuring).toBeLessThanOrEqual(Math.ceil(floodMs / 100) + 2);
    expect(worker.child.exitCode).toBeNull();
    expect((await t.pool.query(`select application_name as name from pg_stat_activity
      where datname = current_database() and application_name like 'usher-%-listen:%' order by 1`)).rows.map((row) => row.name))
      .toEqual([expect.stringMatching(/^usher-executor-listen:/), 'usher-worker-listen:a']);
    // Work enqueued after the flood still starts on NOTIFY.
    const { rows: [after] } = await t.pool.query<{ id: string }>(`insert into usher.executions (action_ref, params) values ('c.work', '{}') returning id`);
    await waitFor(async () => (await t.pool.query(`select 1 from usher.executions where id = $1 and status = 'completed'`, [after!.id])).rowCount === 1,
      { what: 'an execution enqueued after the flood completed', timeoutMs: 10_000 });
    await expectSoundQueue(t.pool, { first: running!.id, last: after!.id });
    console.info(`forged notifications: ${FLOOD} × 7 channels in ${Math.round(floodMs)} ms; heartbeats meanwhile: ${heartbeatsDuring}`);
  } finally {
    await t.pool.query(`drop role if exists ${role}`);
  }
});
