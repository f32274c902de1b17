/**
 * Counter rows vs slot rows for lane accounting, side by side in one run on one server.
 * Usage: DATABASE_URL=postgres://… npx tsx bench/lane-accounting.ts [jobs] [connections] [rounds]
 * Creates (and drops) a database of its own next to the one in DATABASE_URL.
 */
import { readFile } from 'node:fs/promises';
import pg from 'pg';

const [jobs = 4000, connections = 8, rounds = 3] = process.argv.slice(2).map(Number);
const designs = ['bench_counter', 'bench_slots'] as const;
const thresholds = [1, 10];

const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const database = `usher_bench_lanes_${process.pid}`;
const url = new URL(serverUrl);
url.pathname = `/${database}`;

async function prepare(pool: pg.Pool, design: string, threshold: number): Promise<void> {
  await pool.query(`truncate ${design}.jobs, ${design}.lanes${design === 'bench_slots' ? `, ${design}.slots` : ''} restart identity`);
  if (design === 'bench_counter') {
    await pool.query(`insert into bench_counter.lanes values (1, $1, 0)`, [threshold]);
  } else {
    await pool.query(`insert into bench_slots.lanes values (1)`);
    await pool.query(`insert into bench_slots.slots select 1, g, null from generate_series(1, $1) g`, [threshold]);
  }
  await pool.query(`insert into ${design}.jobs (lane, status) select 1, 'requested' from generate_series(1, $1)`, [jobs]);
  await pool.query(`select ${design}.admit(1)`);
  await pool.query(`vacuum analyze ${design}.jobs`);
}

/** Jobs per second for `connections` clients claiming and completing until every job is done. */
async function drain(pool: pg.Pool, design: string): Promise<number> {
  let done = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: connections }, async () => {
    const client = await pool.connect();
    try {
      while (done < jobs) {
        const { rows } = await client.query<{ id: string | null }>(`select ${design}.claim() as id`);
        const id = rows[0]?.id;
        if (!id) {
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        await client.query(`select ${design}.complete($1)`, [id]);
        done += 1;
      }
    } finally {
      client.release();
    }
  }));
  return jobs / ((performance.now() - started) / 1000);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const admin = new pg.Client({ connectionString: serverUrl });
await admin.connect();
await admin.query(`create database ${database}`);
const pool = new pg.Pool({ connectionString: url.toString(), max: connections + 1 });
try {
  await pool.query(await readFile(new URL('./lane-accounting.sql', import.meta.url), 'utf8'));
  const { rows: [server] } = await pool.query(`select version(), current_setting('synchronous_commit') as synchronous_commit`);
  console.log(`${server.version}; synchronous_commit=${server.synchronous_commit}; ${jobs} jobs, ${connections} connections, ${rounds} rounds, alternating designs\n`);
  console.log('| threshold | counter rows (jobs/s) | slot rows (jobs/s) | counter / slots |');
  console.log('| --- | --- | --- | --- |');
  for (const threshold of thresholds) {
    const results: Record<string, number[]> = { bench_counter: [], bench_slots: [] };
    for (let round = 0; round < rounds; round += 1) {
      for (const design of round % 2 === 0 ? designs : [...designs].reverse()) {
        await prepare(pool, design, threshold);
        results[design]!.push(await drain(pool, design));
      }
    }
    const counter = median(results.bench_counter!);
    const slots = median(results.bench_slots!);
    console.log(`| ${threshold} | ${counter.toFixed(0)} | ${slots.toFixed(0)} | ${(counter / slots).toFixed(2)} |`);
  }
} finally {
  await pool.end();
  await admin.query(`drop database ${database} with (force)`);
  await admin.end();
}
