/**
 * 8. Scale of the table (Usher): throughput and claim latency with 1 million finished executions
 * and 100,000 waiting, against a table holding only the executions of the run.
 */
import pg from 'pg';
import { UsherAdapter } from '../adapters/usher.ts';
import { databaseUrl } from '../db.ts';
import { drain } from '../drain.ts';
import { measure, percentile, type RunContext, type ScenarioResult } from '../stats.ts';

const CLAIMS = 300;

/** Finished and waiting rows loaded straight into the table (triggers off, as a restore would). */
async function load(finished: number, waiting: number): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl('bench_usher') });
  await client.connect();
  try {
    await client.query('alter table usher.executions disable trigger user');
    await client.query(
      `insert into usher.executions (action_ref, params, status, result, timeout_seconds, attempt, created_at, scheduled_at, started_at, completed_at)
       select 'bench.noop', jsonb_build_object('seq', -g), 'completed', 'null', 600, 1, now(), now(), now(), now()
       from generate_series(1, $1) g`, [finished]);
    await client.query(
      `insert into usher.executions (action_ref, params, status, timeout_seconds, queue_position, queued_at, created_at, scheduled_at)
       select 'bench.noop', jsonb_build_object('seq', g), 'scheduled', 600, null, now(), now(), now()
       from generate_series(1, $1) g`, [waiting]);
    await client.query('alter table usher.executions enable trigger user');
    await client.query('vacuum analyze usher.executions');
  } finally {
    await client.end();
  }
}

/**
 * Both runs start from a checkpoint, so writing back the pages of the load (a million rows, then
 * their vacuum) does not fall into the loaded run's measurement.
 */
async function checkpoint(): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl('bench_usher') });
  await client.connect();
  try {
    await client.query('checkpoint');
  } finally {
    await client.end();
  }
}

/** Milliseconds of each claim_scheduled call (limit 1), each followed by its completion. */
async function claimLatencies(): Promise<number[]> {
  const client = new pg.Client({ connectionString: databaseUrl('bench_usher') });
  await client.connect();
  try {
    const { rows: [worker] } = await client.query<{ id: string }>(
      `select usher.register_worker('bench-claims', 'bench', 1, '[{"ref": "bench.noop"}]', 1) as id`);
    const times: number[] = [];
    for (let i = 0; i < CLAIMS; i += 1) {
      const started = performance.now();
      const { rows: [claimed] } = await client.query<{ id: string; lease_token: string }>(
        `select id, lease_token from usher.claim_scheduled($1, '{bench.noop}', 1, 60)`, [worker!.id]);
      times.push(performance.now() - started);
      if (!claimed) throw new Error('nothing to claim');
      await client.query(`select usher.complete_execution($1, $2, 'null')`, [claimed.id, claimed.lease_token]);
    }
    return times;
  } finally {
    await client.end();
  }
}

export async function tableScale(ctx: RunContext): Promise<ScenarioResult> {
  const finished = ctx.quick ? 100_000 : 1_000_000;
  const waiting = ctx.quick ? 10_000 : 100_000;
  const total = ctx.quick ? 2_000 : 10_000;
  const usher = { system: 'usher', variant: 'defaults' } as const;
  const once = (loaded: boolean) => async () => {
    const adapter = new UsherAdapter(usher);
    const mode = { kind: 'free' } as const;
    try {
      await adapter.setup(mode);
      if (loaded) await load(finished, waiting);
      await adapter.enqueueBulk(Array.from({ length: total + CLAIMS }, (_, seq) => ({ seq })));
      await checkpoint();
      const claims = await claimLatencies();
      const result = await drain(adapter, { total, concurrency: 10, mode, handlerMs: 0, capMs: 60_000, processes: 1, leaveRest: true });
      return {
        values: { rate: result.done / (result.elapsedMs / 1000), claim_p50: percentile(claims, 50), claim_p99: percentile(claims, 99) },
        capped: result.capped,
      };
    } finally {
      await adapter.close();
    }
  };
  const rows = [
    ...await measure(ctx, 'scale', [usher], once(false)),
    ...await measure(ctx, `scale `, [usher], once(true)),
  ];
  rows[0] = { ...rows[0]!, label: 'usher, empty table' };
  rows[1] = { ...rows[1]!, group: 'scale', system: 'usher-loaded', label: `usher, ${finished.toLocaleString('en')} finished + ${waiting.toLocaleString('en')} waiting` };
  return {
    id: 's8',
    title: `8. Scale of the table (Usher; drain ${total.toLocaleString('en')} with one worker process at concurrency 10; ${CLAIMS} single claims)`,
    notes: [
      'Loaded: the finished and waiting rows are inserted straight into usher.executions before the run (triggers off), then vacuumed and analysed. The waiting rows are older, so the run drains those first. Both runs start after a CHECKPOINT, so the write-back of the load is not measured.',
      'claim p50/p99: one claim_scheduled call (limit 1) at a time, each followed by its completion, ms.',
      '× Usher compares the loaded table with the empty one (above 1: the loaded table is slower).',
    ],
    metrics: [
      { key: 'rate', label: 'exec/s', better: 'higher' },
      { key: 'claim_p50', label: 'claim p50 ms', better: 'lower' },
      { key: 'claim_p99', label: 'claim p99 ms', better: 'lower' },
    ],
    rows,
  };
}
