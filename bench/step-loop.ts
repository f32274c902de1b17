/**
 * The server's side of the hot path without a worker: one connection calls complete_and_claim back
 * to back, each call completing what the previous one claimed. Times here leave out the worker
 * process, so an A/B of a SQL change moves less with the machine than a whole scenario does.
 *   serial: one threshold-1 lane; each call completes one execution and claims the next (scenario 2's step).
 *   lanes:  1,000 threshold-1 lanes × 20 (scenario 4's shape), 550 claimed; each call completes
 *           --batch of them, admitting and claiming the next of each lane.
 *   unlimited: 20,000 executions of an action without a policy (scenario 1's shape), 550 claimed;
 *           each call completes --batch of them and claims as many.
 * Usage: npx tsx bench/step-loop.ts serial|lanes|unlimited [--batch 250] [--calls 60] [--explain]
 * --explain prints auto_explain (analyze, timing) of every statement of one call instead of timing.
 * --functions prints each usher function's calls and its total and own time (track_functions) per step.
 * --against-unnamed (serial) alternates blocks of 100 steps between the prepared call and the same
 *   call sent unnamed (parsed and planned every time), and prints both.
 * --sql runs a statement after the queue is loaded and before anything is claimed (A/B of an index).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { UsherAdapter } from './adapters/usher.ts';
import { databaseUrl, dropDatabase } from './db.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    batch: { type: 'string', default: '250' },
    calls: { type: 'string', default: '60' },
    explain: { type: 'boolean', default: false },
    sql: { type: 'string' },
    functions: { type: 'boolean', default: false },
    'against-unnamed': { type: 'boolean', default: false },
  },
});
const mode = positionals[0] === 'lanes' || positionals[0] === 'unlimited' ? positionals[0] : 'serial';
const batch = mode === 'serial' ? 1 : Number(args.batch);
const lanes = 1000;
const perLane = 20;
const held = 550;
const serialSteps = args['against-unnamed'] ? 6000 : 2000;

interface Claim { id: string; lease_token: string }

const adapter = new UsherAdapter({ system: 'usher', variant: 'defaults' });
await adapter.setup(mode === 'unlimited' ? { kind: 'free' } : { kind: mode });
await adapter.enqueueBulk(mode === 'serial'
  ? Array.from({ length: serialSteps + 1 }, (_, seq) => ({ seq }))
  : Array.from({ length: lanes * perLane }, (_, seq) => (mode === 'lanes' ? { seq, lane: seq % lanes } : { seq })));
const client = new pg.Client({ connectionString: databaseUrl('bench_usher') });
await client.connect();
if (args.sql) await client.query(args.sql);
if (args.functions) await client.query(`set track_functions = 'pl'`);
await client.query('call usher.admit_queued()');
await client.query('vacuum analyze usher.executions');
const { rows: [worker] } = await client.query<{ id: string }>(
  `select usher.register_worker('step-loop', 'bench', 1, '[{"ref": "bench.noop"}]', 1) as id`);
const claimed = (await client.query<Claim>(
  `select id, lease_token from usher.claim_scheduled($1, array['bench.noop'], $2, 60)`, [worker!.id, mode === 'serial' ? 1 : held])).rows;

/** CPU time of this connection's backend so far, ms (utime + stime from /proc, 10 ms ticks): readable only on the database's own host. */
function backendCpuMs(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}
const backendPid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;

let preparedCall = true;

/** Completes the oldest `batch` held executions and claims as many; the number completed. */
async function step(): Promise<number> {
  const done = claimed.splice(0, batch);
  // Prepared once, as the worker's calls are.
  const { rows } = await client.query<Claim & { kind: string }>({
    name: preparedCall ? 'complete_and_claim' : undefined,
    text: `select kind, id, lease_token from usher.complete_and_claim($1::bigint[], $2::uuid[], $3::jsonb[], $4, array['bench.noop'], $5, 60)`,
    values: [done.map((c) => c.id), done.map((c) => c.lease_token), done.map(() => 'null'), worker!.id, done.length],
  });
  claimed.push(...rows.filter((row) => row.kind === 'claimed'));
  return done.length;
}

// Warm the session's plans first.
for (let i = 0; i < 10; i += 1) await step();
if (args.explain) {
  client.on('notice', (notice) => console.log(notice.message));
  await client.query(`load 'auto_explain'; set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;
    set auto_explain.log_level = notice; set auto_explain.log_analyze = on; set auto_explain.log_timing = on`);
  await step();
} else if (args['against-unnamed']) {
  // Both kinds in turn, so both see the same drift of the machine.
  const totals = { prepared: { ms: 0, steps: 0 }, unnamed: { ms: 0, steps: 0 } };
  for (let block = 0; claimed.length > 0 && totals.prepared.steps + totals.unnamed.steps < serialSteps - 120; block += 1) {
    preparedCall = block % 2 === 0;
    const total = totals[preparedCall ? 'prepared' : 'unnamed'];
    const started = performance.now();
    for (let i = 0; i < 100 && claimed.length > 0; i += 1) total.steps += await step();
    total.ms += performance.now() - started;
  }
  const perStep = (kind: keyof typeof totals) => totals[kind].ms / totals[kind].steps;
  console.log(`${mode}: prepared ${perStep('prepared').toFixed(3)} ms a step (${totals.prepared.steps}), ` +
    `unnamed ${perStep('unnamed').toFixed(3)} ms a step (${totals.unnamed.steps}); prepared ÷ unnamed ${(perStep('prepared') / perStep('unnamed')).toFixed(3)}`);
} else {
  const calls = mode === 'serial' ? serialSteps - 20 : Number(args.calls);
  let completed = 0;
  const cpuBefore = backendCpuMs(backendPid);
  const started = performance.now();
  for (let i = 0; i < calls && claimed.length > 0; i += 1) completed += await step();
  const elapsedMs = performance.now() - started;
  const cpuAfter = backendCpuMs(backendPid);
  const cpu = cpuBefore === undefined || cpuAfter === undefined ? ''
    : `; backend CPU ${(((cpuAfter - cpuBefore) * 1000) / completed).toFixed(1)} µs per execution`;
  console.log((mode === 'serial'
    ? `serial: ${completed} steps, ${(completed / (elapsedMs / 1000)).toFixed(0)} steps/s, ${(elapsedMs / completed).toFixed(3)} ms a step`
    : `${mode}: ${completed} executions in calls of ${batch}, ${((elapsedMs * 1000) / completed).toFixed(1)} µs per execution`) + cpu);
  if (args.functions) {
    // The statistics collector is flushed at the end of a transaction, at most once a second.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await client.query('select 1');
    const { rows } = await client.query<{ funcname: string; calls: string; total_ms: number; self_ms: number }>(
      `select funcname, calls, total_time as total_ms, self_time as self_ms from pg_stat_user_functions
       where schemaname = 'usher' order by total_time desc`);
    for (const row of rows) {
      console.log(`${row.funcname.padEnd(32)} ${(Number(row.calls) / completed).toFixed(2).padStart(6)} calls ` +
        `${((row.total_ms * 1000) / completed).toFixed(1).padStart(7)} µs total ${((row.self_ms * 1000) / completed).toFixed(1).padStart(7)} µs own, per execution`);
    }
  }
}
await client.end();
await adapter.close();
await dropDatabase('bench_usher');
