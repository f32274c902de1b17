/** 1. Bulk throughput, no limit: N no-op jobs bulk-enqueued, drained by 1 and by 4 worker processes. */
import { drain } from '../drain.ts';
import { measure, type RunContext, type ScenarioResult } from '../stats.ts';

export async function bulkThroughput(ctx: RunContext): Promise<ScenarioResult> {
  const total = ctx.quick ? 2_000 : 20_000;
  const capMs = ctx.quick ? 10_000 : 12_000;
  const shapes = ctx.quick ? [[1, 10], [4, 50]] : [[1, 10], [1, 50], [4, 10], [4, 50]];
  const mode = { kind: 'free' } as const;
  const rows = [];
  for (const [processes, concurrency] of shapes) {
    rows.push(...await measure(ctx, `${processes} proc × ${concurrency}`, ctx.configs, async (adapter) => {
      await adapter.setup(mode);
      await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq })), mode);
      const result = await drain(adapter, { total, concurrency: concurrency!, mode, handlerMs: 0, capMs, processes: processes! });
      return {
        values: { rate: result.done / (result.elapsedMs / 1000), rss_mb: result.maxWorkerRss / 2 ** 20 },
        capped: result.capped,
      };
    }));
  }
  return {
    id: 's1',
    title: `1. Bulk throughput, no limit (${total.toLocaleString('en')} no-op jobs, worker processes × concurrency)`,
    notes: [
      `Each run is capped at ${capMs / 1000} s; a capped rate counts the jobs finished within the cap.`,
      'rss_mb: the largest resident set of one worker process during the run: a harness process that runs each system\'s workers under the TypeScript loader (tsx, about 30 MB of it). Scenario 9 measures `usher worker` itself.',
    ],
    metrics: [
      { key: 'rate', label: 'exec/s', better: 'higher' },
      { key: 'rss_mb', label: 'worker RSS MB', better: 'lower', digits: 0 },
    ],
    rows,
  };
}
