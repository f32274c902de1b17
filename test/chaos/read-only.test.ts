/**
 * Scenario 15 (RELIABILITY T10): a failover to a server that is read-only for a while, then back.
 * The database is made read-only for every new session (`default_transaction_read_only`) and every
 * Usher connection is cut, as a failover does: the processes reconnect to a database where every
 * write fails with 25006 and LISTEN is refused. Later it is writable again and the connections are
 * cut once more. Nothing acknowledged may be lost, no process may exit, and none may flood its log.
 */
import { expect, it } from 'vitest';
import { startExecutor, type UsherProcess } from '../support/processes.ts';
import { eventsWhenLogged, parseLine, usePolicy } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { enqueueSpread, expectNoDuplicateRuns, expectSoundQueue, scale, startChaosWorker, terminateUsherBackends, useChaosDatabase, waitAllEnded } from './support.ts';

const COUNT = scale(600, 3000);
const READ_ONLY_MS = scale(6_000, 30_000);
const LEASE_SECONDS = 3;

const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries, retry_delay_seconds) values ('c.work', 3, 0.1)`);

/** Runs a statement in a read-write transaction, which a read-only default still allows. */
async function asWritable(sql: string): Promise<void> {
  const client = await chaos.t.pool.connect();
  try {
    await client.query('begin read write');
    await client.query(sql);
    await client.query('commit');
  } finally {
    client.release();
  }
}

/**
 * Warnings and errors a process logged between two instants (ms since the epoch): those about the
 * process's own loops and connections counted by event, and those about one execution by its id.
 */
function problemsLogged(proc: UsherProcess, from: number, to: number): { byEvent: Record<string, number>; byExecution: Record<string, number> } {
  const byEvent: Record<string, number> = {};
  const byExecution: Record<string, number> = {};
  for (const line of proc.lines.map(parseLine)) {
    if (line === undefined || !['warn', 'error'].includes(String(line.level))) continue;
    const at = Date.parse(String(line.ts));
    if (at < from || at >= to) continue;
    if (line.execution_id !== undefined) byExecution[String(line.execution_id)] = (byExecution[String(line.execution_id)] ?? 0) + 1;
    else byEvent[String(line.event)] = (byEvent[String(line.event)] ?? 0) + 1;
  }
  return { byEvent, byExecution };
}

it(`loses nothing and keeps every process up while the database is read-only for ${READ_ONLY_MS / 1000} s`, { timeout: scale(180_000, 400_000) }, async () => {
  const { t } = chaos;
  await usePolicy(t.pool, 'c.work', 'chaos-read-only', 5);
  const env = { USHER_LEASE_SECONDS: String(LEASE_SECONDS), CHAOS_RUN_LOG: chaos.log.path };
  const procs = await Promise.all([
    startExecutor(t.url, env),
    startChaosWorker(t.url, { concurrency: 4, name: 'a', env }),
    startChaosWorker(t.url, { concurrency: 4, name: 'b', env }),
  ]);
  const range = await enqueueSpread(t.pool, 'c.work', COUNT, { lanes: 3, ms: [5, 40] });
  const completed = async () => (await t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and status = 'completed'`, [range.first, range.last])).rows[0]!.n;
  await waitFor(async () => (await completed()) >= COUNT / 3, { what: 'a third completed', timeoutMs: 60_000 });

  await asWritable(`alter database ${t.name} set default_transaction_read_only = on`);
  const readOnlyFrom = Date.now();
  expect(await terminateUsherBackends(t.pool)).toBeGreaterThanOrEqual(3);
  // Back in read-only sessions: the processes' writes fail from here on.
  await waitFor(async () => (await t.pool.query(`select 1 from pg_stat_activity
    where datname = current_database() and application_name like 'usher-worker:%' and backend_start >= $1`, [new Date(readOnlyFrom)])).rowCount! > 0, { what: 'a worker reconnected to the read-only database', timeoutMs: 20_000 });
  const completedWhileReadOnly = await completed();
  await new Promise((resolve) => setTimeout(resolve, READ_ONLY_MS)); // the outage itself, not a wait for anything
  expect(await completed()).toBe(completedWhileReadOnly);
  await asWritable(`alter database ${t.name} reset default_transaction_read_only`);
  const writableFrom = Date.now();
  await terminateUsherBackends(t.pool);

  expect(await waitAllEnded(t.pool, range, 120_000)).toEqual({ completed: COUNT });
  for (const proc of procs) expect(proc.child.exitCode, proc.lines.slice(-10).join('\n')).toBeNull();
  // The read-only errors were met (a write refused with 25006) and retried.
  const readOnlyErrors = procs.flatMap((proc) => proc.lines.filter((line) => line.includes('"code":"25006"')));
  expect(readOnlyErrors.length).toBeGreaterThan(0);
  // The log stays bounded: about its loops and connections, at most one warning or error a second
  // per process (a failing loop warns once, then every 10 s); about an execution that was being
  // marked, two lines (the first retry, and giving up).
  const seconds = (writableFrom - readOnlyFrom) / 1000;
  const logged = procs.map((proc) => problemsLogged(proc, readOnlyFrom, writableFrom));
  for (const { byEvent, byExecution } of logged) {
    expect(Object.values(byEvent).reduce((sum, n) => sum + n, 0), JSON.stringify(byEvent)).toBeLessThanOrEqual(Math.ceil(seconds));
    expect(Object.values(byExecution).filter((n) => n > 2), JSON.stringify(byExecution)).toEqual([]);
  }
  // Each failing loop said once that it works again.
  expect((await eventsWhenLogged(procs[0]!, 'admission:recovered', 1))[0]).toMatchObject({ level: 'info' });
  await eventsWhenLogged(procs[0]!, 'sweep:recovered', 1);
  for (const worker of procs.slice(1)) {
    await eventsWhenLogged(worker, 'claim:recovered', 1);
    await eventsWhenLogged(worker, 'heartbeat:recovered', 1);
  }
  const { rows: attempts } = await t.pool.query(
    `select status, count(*)::int as n from usher.execution_attempts where execution_id between $1 and $2 group by status`, [range.first, range.last]);
  expect(attempts.filter((row) => row.status !== 'abandoned')).toEqual([]);
  await expectSoundQueue(t.pool, range);
  await expectNoDuplicateRuns(t.pool, chaos.log, range);
  console.info(`read-only for ${seconds.toFixed(1)} s: ${readOnlyErrors.length} refused writes logged; warnings and errors per process `
    + `(executor, a, b): ${logged.map(({ byEvent, byExecution }) => `${JSON.stringify(byEvent)} and ${Object.keys(byExecution).length} executions`).join('; ')}; attempts taken back: ${JSON.stringify(attempts)}`);
});
