/**
 * 7. The floor: pgbench on the same server running the least work an execution needs (claim with
 * SKIP LOCKED, then complete; and insert, claim, complete), each statement its own transaction, from
 * 10 clients. Usher drains with one worker process at concurrency 10 in the same rounds.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import pg from 'pg';
import { UsherAdapter } from '../adapters/usher.ts';
import { recreateDatabase } from '../db.ts';
import { drain } from '../drain.ts';
import { measure, type RunContext, type ScenarioResult } from '../stats.ts';

const run = promisify(execFile);
const CLIENTS = 10;

const claim = `update floor_jobs set status = 'running' where id = (select id from floor_jobs where status = 'ready' order by id limit 1 for update skip locked) returning id \\gset`;
const complete = `update floor_jobs set status = 'done' where id = :id;`;
const scripts = {
  claim_complete: `${claim}\n${complete}\n`,
  insert_claim_complete: `insert into floor_jobs (status, payload) values ('ready', '{"seq": 1}');\n${claim}\n${complete}\n`,
};

async function pgbench(script: keyof typeof scripts, seconds: number): Promise<number> {
  const url = await recreateDatabase('bench_floor');
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`create table floor_jobs (id bigserial primary key, status text not null, payload jsonb not null default '{}')`);
  await client.query(`create index floor_jobs_ready on floor_jobs (id) where status = 'ready'`);
  await client.query(`insert into floor_jobs (status) select 'ready' from generate_series(1, 300000)`);
  await client.query('vacuum analyze floor_jobs');
  await client.end();
  const file = `${tmpdir()}/usher-floor-${script}.sql`;
  await writeFile(file, scripts[script]);
  const { stdout } = await run('pgbench', ['-n', '-c', String(CLIENTS), '-j', '2', '-T', String(seconds), '-f', file, url]);
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  if (!tps) throw new Error(`pgbench printed no tps:\n${stdout}`);
  return Number(tps[1]);
}

export async function floor(ctx: RunContext): Promise<ScenarioResult> {
  const seconds = ctx.quick ? 3 : 8;
  const total = ctx.quick ? 2_000 : 10_000;
  const usher = ctx.configs.find((config) => config.system === 'usher') ?? { system: 'usher', variant: 'defaults' } as const;
  const rows = await measure(ctx, 'floor', [usher], async () => {
    const adapter = new UsherAdapter(usher);
    const mode = { kind: 'free' } as const;
    try {
      await adapter.setup(mode);
      await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq })));
      const drained = await drain(adapter, { total, concurrency: CLIENTS, mode, handlerMs: 0, capMs: 60_000, processes: 1 });
      const usherRate = drained.done / (drained.elapsedMs / 1000);
      const claimComplete = await pgbench('claim_complete', seconds);
      const insertClaimComplete = await pgbench('insert_claim_complete', seconds);
      return {
        values: {
          usher: usherRate,
          floor: claimComplete,
          fraction: usherRate / claimComplete,
          floor_with_insert: insertClaimComplete,
        },
      };
    } finally {
      await adapter.close();
    }
  });
  return {
    id: 's7',
    title: `7. The floor: pgbench with the minimum work per execution (${CLIENTS} clients, ${seconds} s) vs Usher draining ${total.toLocaleString('en')} (one worker process, concurrency ${CLIENTS})`,
    notes: [
      'floor: pgbench transactions/s of a script that claims one row (UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)) and completes it: two commits per execution, one row per statement. Usher commits once per batch of completions (complete_and_claim ends every execution whose handler returned while the previous batch was on its way, and claims for the freed slots), so it can pass this unbatched floor. floor with insert: the same after an INSERT (three commits).',
      'fraction: Usher\'s rate ÷ floor. Usher\'s execution also writes a lease, a worker id and times, goes through PL/pgSQL functions and runs a handler in Node.',
    ],
    metrics: [
      { key: 'fraction', label: 'Usher ÷ floor', better: 'higher' },
      { key: 'usher', label: 'Usher exec/s', better: 'higher' },
      { key: 'floor', label: 'floor exec/s', better: 'higher' },
      { key: 'floor_with_insert', label: 'floor with insert exec/s', better: 'higher' },
    ],
    rows,
  };
}
