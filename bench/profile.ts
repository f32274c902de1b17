/**
 * Where a strict-FIFO execution's time goes on the server: drains a threshold-1 lane with
 * track_functions = 'all' and prints pg_stat_user_functions (calls, total and self ms per call).
 * Usage: npx tsx bench/profile.ts [jobs] [serial|free]
 * TRACK=pl counts PL/pgSQL functions only ('all' keeps SQL functions from being inlined, which
 * changes what it measures); LOG_STATEMENTS=1 logs every statement of the run to the server log.
 */
import pg from 'pg';
import { UsherAdapter } from './adapters/usher.ts';
import { databaseUrl, dropDatabase, serverUrl } from './db.ts';
import { drain } from './drain.ts';

const total = Number(process.argv[2] ?? 1000);
const mode = process.argv[3] === 'free' ? { kind: 'free' } as const : { kind: 'serial' } as const;
const adapter = new UsherAdapter({ system: 'usher', variant: 'defaults' });
await adapter.setup(mode);
const admin = new pg.Client({ connectionString: serverUrl });
await admin.connect();
await admin.query(`alter database bench_usher set track_functions = '${process.env.TRACK ?? 'all'}'`);
if (process.env.LOG_STATEMENTS) await admin.query(`alter database bench_usher set log_statement = 'all'`);
await admin.end();
await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq })));
const client = new pg.Client({ connectionString: databaseUrl('bench_usher') });
await client.connect();
await client.query('select pg_stat_reset()');
const result = await drain(adapter, { total, concurrency: 10, mode, handlerMs: 0, capMs: 120_000, processes: 0 });
await new Promise((resolve) => setTimeout(resolve, 1500));
await client.query('select pg_stat_clear_snapshot()');
const { rows } = await client.query(
  `select funcname, calls, round((total_time / calls)::numeric, 3) as total_ms_per_call, round((self_time / calls)::numeric, 3) as self_ms_per_call,
     round((total_time / $1)::numeric, 3) as total_ms_per_execution
   from pg_stat_user_functions order by total_time desc limit 15`, [total]);
const { rows: [db] } = await client.query(`select xact_commit from pg_stat_database where datname = 'bench_usher'`);
console.log(`${total} executions (${mode.kind}) in ${result.elapsedMs.toFixed(0)} ms: ${(total / (result.elapsedMs / 1000)).toFixed(0)}/s; commits ${db.xact_commit} (${(Number(db.xact_commit) / total).toFixed(2)} per execution, all connections)`);
console.table(rows);
await client.end();
await adapter.close();
await dropDatabase('bench_usher');
