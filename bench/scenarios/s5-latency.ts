/** 5. Latency: idle workers, single enqueues spaced 10 ms apart; from the enqueue call to the handler's start. */
import type { Adapter } from '../adapters/types.ts';
import type { UsherAdapter } from '../adapters/usher.ts';
import { recorder } from '../drain.ts';
import { measure, withoutUsherFast, percentile, type RunContext, type ScenarioResult } from '../stats.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function latency(ctx: RunContext): Promise<ScenarioResult> {
  const total = ctx.quick ? 100 : 500;
  const spacingMs = 10;
  const mode = { kind: 'free' } as const;
  const run = (byApi: boolean) => async (adapter: Adapter) => {
    await adapter.setup(mode);
    const rec = recorder(0);
    const services = await adapter.startServices();
    const api = byApi ? await (adapter as UsherAdapter).startApi() : undefined;
    const workers = await adapter.startWorkers({ concurrency: 10, mode, handler: rec.handler });
    await sleep(500);
    const sentAt: number[] = [];
    const begin = performance.now();
    try {
      for (let seq = 0; seq < total; seq += 1) {
        const wait = begin + seq * spacingMs - performance.now();
        if (wait > 0) await sleep(wait);
        sentAt[seq] = performance.now();
        await (byApi ? (adapter as UsherAdapter).enqueueOneByApi({ seq }) : adapter.enqueueOne({ seq }, mode));
      }
      const deadline = performance.now() + 10_000;
      while (rec.spans.length < total && performance.now() < deadline) await sleep(5);
    } finally {
      await workers.stop();
      await api?.stop();
      await services.stop();
    }
    const latencies = rec.spans.map((span) => span.start - sentAt[span.seq]!);
    return {
      values: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), p99: percentile(latencies, 99) },
      capped: rec.spans.length < total,
    };
  };
  const rows = await measure(ctx, 'SQL/client enqueue', withoutUsherFast(ctx.configs), run(false));
  const usher = withoutUsherFast(ctx.configs).filter((config) => config.system === 'usher');
  if (usher.length > 0) rows.push(...await measure(ctx, 'HTTP API enqueue', usher, run(true)));
  return {
    id: 's5',
    title: `5. Latency, idle workers (${total} single enqueues ${spacingMs} ms apart; enqueue call to handler start, ms)`,
    notes: [
      'Usher enqueues with a plain SQL INSERT; graphile-worker with add_job, pg-boss with send(), BullMQ with add(). One worker at concurrency 10 in the measuring process.',
      'HTTP API enqueue: POST /api/v1/executions/execute to `usher api` running in a process of its own, over a keep-alive connection (Node fetch).',
      'Handoff in a threshold-1 lane (completion to the next start) is in scenario 2.',
    ],
    metrics: [
      { key: 'p50', label: 'p50 ms', better: 'lower' },
      { key: 'p95', label: 'p95 ms', better: 'lower' },
      { key: 'p99', label: 'p99 ms', better: 'lower' },
    ],
    rows,
  };
}
