/**
 * A bounded soak, run on demand: `npm run soak -- --minutes 10 --executions 1000000 --lanes 100`.
 * Real executors and workers (one SIGKILLed and replaced every --kill-every seconds) run a steady
 * stream of executions on a database of their own, with retention on. Every --report-every seconds
 * it prints throughput, backlog, table and index sizes, dead tuples and the RSS of every process;
 * at the end, whether anything kept growing, and the invariant check. Exit code 1 if it fails.
 *
 * DATABASE_URL names the server (a database usher_soak_<pid> is created on it and dropped after);
 * without it an embedded Postgres is started in a temp folder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { migrate } from '../src/db/migrator.ts';
import { createLogger } from '../src/log.ts';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    executions: { type: 'string', default: '1000000' },
    lanes: { type: 'string', default: '100' },
    threshold: { type: 'string', default: '5' },
    workers: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '16' },
    'kill-every': { type: 'string', default: '30' },
    'report-every': { type: 'string', default: '15' },
    'retention-seconds': { type: 'string', default: '60' },
    'handler-ms': { type: 'string', default: '10' },
    keep: { type: 'boolean', default: false },
  },
});
const minutes = Number(args.minutes);
const total = Number(args.executions);
const lanes = Number(args.lanes);
const rate = total / (minutes * 60);
const cli = fileURLToPath(new URL('../bin/usher.js', import.meta.url));
const packs = fileURLToPath(new URL('../examples/packs', import.meta.url));
const log = createLogger('warn', { component: 'soak' });

interface Proc { readonly name: string; child: ChildProcess }

async function openServer(): Promise<{ adminUrl: string; stop(): Promise<void> }> {
  if (process.env.DATABASE_URL) return { adminUrl: process.env.DATABASE_URL, stop: async () => undefined };
  const { startEmbedded } = await import('../src/db/embedded.ts');
  const dataDir = await mkdtemp(join(tmpdir(), 'usher-soak-'));
  const server = await startEmbedded({ dataDir, port: 54390 + (process.pid % 500), database: 'usher' }, log);
  return {
    adminUrl: server.url,
    stop: async () => {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
      await rm(server.dataDir, { recursive: true, force: true });
    },
  };
}

function rssMb(pid: number | undefined): number | null {
  try {
    const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb ? Math.round(Number(kb) / 1024) : null;
  } catch {
    return null;
  }
}

const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;

// Ctrl-C ends the run early through the normal path: processes stopped, database dropped, report printed.
let interrupted = false;
process.once('SIGINT', () => {
  interrupted = true;
});
process.once('SIGTERM', () => {
  interrupted = true;
});

async function main(): Promise<number> {
  const server = await openServer();
  const dbName = `usher_soak_${process.pid}`;
  const admin = new pg.Client({ connectionString: server.adminUrl });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const url = new URL(server.adminUrl);
  url.pathname = `/${dbName}`;
  const dbUrl = url.toString();
  const pool = new pg.Pool({ connectionString: dbUrl, max: 3, application_name: 'soak' });
  pool.on('error', () => undefined);
  await migrate(pool, log);
  // The example pack's demo.sleep, in lanes by params.lane.
  await pool.query(`insert into usher.actions (ref) values ('demo.sleep')`);
  await pool.query(`insert into usher.policies (ref, action_ref, threshold, parameters) values ('soak', 'demo.sleep', $1, '{lane}')`, [Number(args.threshold)]);

  const env = {
    ...process.env, DATABASE_URL: dbUrl, USHER_LOG_LEVEL: 'warn', USHER_LEASE_SECONDS: '5',
    USHER_RETENTION_DAYS: String(Number(args['retention-seconds']) / 86_400),
  };
  const procs: Proc[] = [];
  const start = (name: string, cmd: string[]): Proc => {
    const proc = { name, child: spawn(process.execPath, [cli, ...cmd], { env, stdio: ['ignore', 'ignore', 'inherit'] }) };
    procs.push(proc);
    return proc;
  };
  start('executor-1', ['executor']);
  start('executor-2', ['executor']);
  const workers: Proc[] = [];
  let workerSerial = 0;
  const startWorker = () => start(`worker-${++workerSerial}`, ['worker', '--packs', packs, '--concurrency', args.concurrency, '--name', `soak-${workerSerial}`]);
  for (let i = 0; i < Number(args.workers); i += 1) workers.push(startWorker());

  console.log(`soak: ${total} executions over ${minutes} min (${rate.toFixed(0)}/s) in ${lanes} lanes of threshold ${args.threshold}, ` +
    `${args.workers} workers x ${args.concurrency}, 2 executors, a worker SIGKILLed every ${args['kill-every']} s, retention ${args['retention-seconds']} s`);
  const { rows: settings } = await pool.query(
    `select name, setting from pg_settings where name in ('autovacuum', 'autovacuum_naptime', 'autovacuum_max_workers') order by name`);
  console.log(`server: ${settings.map((row) => `${row.name}=${row.setting}`).join(' ')}`);
  if (settings.some((row) => row.name === 'autovacuum' && row.setting === 'off')) {
    console.log('warning: autovacuum is off on this server: dead tuples will pile up whatever Usher does');
  }
  const startedAt = Date.now();
  const endAt = startedAt + minutes * 60_000;
  let inserted = 0;
  let kills = 0;
  const producer = (async () => {
    while (Date.now() < endAt && inserted < total && !interrupted) {
      const due = Math.min(total, Math.floor(((Date.now() - startedAt) / 1000) * rate)) - inserted;
      if (due > 0) {
        await pool.query(
          `insert into usher.executions (action_ref, params)
           select 'demo.sleep', jsonb_build_object('lane', floor(random() * $2::int)::int, 'n', $3::bigint + g, 'ms', floor(random() * $4::int)::int)
           from generate_series(1, $1::int) g`, [due, lanes, inserted, Number(args['handler-ms']) * 2]);
        inserted += due;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  const killer = setInterval(() => {
    const index = Math.floor(Math.random() * workers.length);
    workers[index]!.child.kill('SIGKILL');
    workers[index] = startWorker();
    kills += 1;
  }, Number(args['kill-every']) * 1000);

  const samples: Record<string, number | string | null>[] = [];
  let lastEnded = 0;
  let lastAt = startedAt;
  const sample = async () => {
    const { rows: [q] } = await pool.query(`
      select (select count(*) from usher.executions where completed_at is null)::int as backlog,
        (select coalesce(sum(total_admitted), 0) from usher.lanes)::bigint as admitted_in_live_lanes`);
    const { rows: [ended] } = await pool.query(`select count(*)::int as n from public.soak_ended`).catch(() => ({ rows: [{ n: 0 }] }));
    const { rows: tables } = await pool.query(`
      select c.relname as name, pg_total_relation_size(c.oid) as total, pg_relation_size(c.oid) as heap, pg_indexes_size(c.oid) as indexes,
        s.n_live_tup as live, s.n_dead_tup as dead, s.autovacuum_count as autovacuums
      from pg_class c join pg_stat_user_tables s on s.relid = c.oid
      where c.relnamespace = 'usher'::regnamespace and c.relname in ('executions', 'execution_attempts', 'lanes', 'workers')`);
    const now = Date.now();
    const endedNow = Number(ended!.n);
    const row: Record<string, number | string | null> = {
      t_s: Math.round((now - startedAt) / 1000),
      inserted,
      ended_per_s: Math.round((endedNow - lastEnded) / ((now - lastAt) / 1000)),
      backlog: q!.backlog,
      kills,
    };
    lastEnded = endedNow;
    lastAt = now;
    for (const table of tables) {
      row[`${table.name}_mb`] = mb(Number(table.total));
      row[`${table.name}_idx_mb`] = mb(Number(table.indexes));
      row[`${table.name}_live`] = Number(table.live);
      row[`${table.name}_dead`] = Number(table.dead);
      if (table.name === 'executions') row.executions_autovacuums = Number(table.autovacuums);
    }
    row.rss_mb = procs.filter((p) => p.child.exitCode === null && p.child.signalCode === null)
      .map((p) => `${p.name}=${rssMb(p.child.pid)}`).join(' ');
    row.rss_max_mb = Math.max(...procs.map((p) => rssMb(p.child.pid) ?? 0));
    samples.push(row);
    console.log(JSON.stringify(row));
  };
  // Counts endings with a trigger, since retention deletes ended rows.
  await pool.query(`
    create table public.soak_ended (id bigint);
    create function public.soak_count_ended() returns trigger language plpgsql as $$
    begin insert into public.soak_ended values (new.id); return null; end $$;
    create trigger soak_count_ended after update of status on usher.executions
      for each row when (old.completed_at is null and new.completed_at is not null) execute function public.soak_count_ended();`);
  const reporter = setInterval(() => void sample().catch((error: unknown) => console.error('sample failed', error)), Number(args['report-every']) * 1000);

  await producer;
  clearInterval(killer);
  const drainDeadline = Date.now() + 120_000;
  while (Date.now() < drainDeadline && !interrupted) {
    const { rows: [left] } = await pool.query(`select count(*)::int as n from usher.executions where completed_at is null`);
    if (left!.n === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  clearInterval(reporter);
  await sample();
  for (const proc of procs) proc.child.kill('SIGTERM');
  await Promise.all(procs.map((proc) => proc.child.exitCode !== null || proc.child.signalCode !== null
    ? undefined : new Promise((resolve) => proc.child.once('exit', resolve))));

  const seconds = (Date.now() - startedAt) / 1000;
  const { rows: [{ n: endedTotal }] } = await pool.query(`select count(*)::int as n from public.soak_ended`);
  const { rows: [statuses] } = await pool.query(`select count(*) filter (where completed_at is null)::int as not_ended,
    count(*) filter (where status = 'abandoned')::int as abandoned from usher.executions`);
  const invariants = (await pool.query('select * from usher.check_invariants()')).rows;
  const half = samples.slice(Math.floor(samples.length / 2), -1);
  const firstHalf = samples.slice(0, Math.floor(samples.length / 2));
  const peak = (rows: typeof samples, key: string) => Math.max(0, ...rows.map((row) => Number(row[key] ?? 0)));
  const growth = ['executions_mb', 'executions_idx_mb', 'executions_dead', 'execution_attempts_mb', 'rss_max_mb']
    .map((key) => ({ key, first_half_peak: peak(firstHalf, key), second_half_peak: peak(half, key) }));
  console.log(`\nsoak summary: ${inserted} inserted, ${endedTotal} ended (${Math.round(endedTotal / seconds)}/s over ${seconds.toFixed(0)} s), ` +
    `${statuses!.not_ended} not ended, ${kills} worker kills, check_invariants: ${invariants.length === 0 ? 'ok' : JSON.stringify(invariants)}`);
  console.log('growth (peak in first half vs second half of the run):');
  for (const g of growth) console.log(`  ${g.key.padEnd(22)} ${String(g.first_half_peak).padStart(10)} -> ${String(g.second_half_peak).padStart(10)}`);

  await pool.end();
  if (!args.keep) await admin.query(`drop database ${dbName} with (force)`);
  await admin.end();
  await server.stop();
  return invariants.length === 0 && statuses!.not_ended === 0 && endedTotal === inserted ? 0 : 1;
}

process.exitCode = await main();
