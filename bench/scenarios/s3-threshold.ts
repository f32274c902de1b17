/** 3. Threshold N: one action, at most N at a time, a 5 ms handler; how full the slots stay. */
import type { Adapter, Mode } from '../adapters/types.ts';
import { drain } from '../drain.ts';
import { measure, withoutUsherFast, type RunContext, type ScenarioResult } from '../stats.ts';

const HANDLER_MS = 5;

export async function thresholdN(ctx: RunContext): Promise<ScenarioResult> {
  const total = ctx.quick ? 1_000 : 10_000;
  const capMs = ctx.quick ? 10_000 : 20_000;
  const once = (mode: Mode, concurrency: number) => async (adapter: Adapter) => {
    await adapter.setup(mode);
    await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq })), mode);
    const result = await drain(adapter, { total, concurrency, mode, handlerMs: HANDLER_MS, capMs, processes: 0 });
    const busyMs = result.spans.reduce((sum, span) => sum + (span.end > 0 ? span.end - span.start : 0), 0);
    return {
      values: {
        rate: result.done / (result.elapsedMs / 1000),
        avg_in_flight: busyMs / result.elapsedMs,
        max_in_flight: result.maxInFlight,
      },
      capped: result.capped,
    };
  };
  const rows = await measure(ctx, 'threshold 10', withoutUsherFast(ctx.configs), once({ kind: 'limit', threshold: 10 }, 10));
  const usher = ctx.configs.filter((config) => config.system === 'usher');
  if (usher.length > 0) {
    rows.push(...await measure(ctx, 'threshold 50', withoutUsherFast(usher), once({ kind: 'limit', threshold: 50 }, 50)));
    rows.push(...await measure(ctx, 'unlimited, concurrency 50', usher, once({ kind: 'free' }, 50)));
  }
  return {
    id: 's3',
    title: `3. Threshold N (${total.toLocaleString('en')} jobs, ${HANDLER_MS} ms handler, one worker)`,
    notes: [
      'Usher: a policy with the threshold. Peers without a per-queue limit (graphile-worker, pg-boss) run one worker at concurrency = threshold, which only limits that worker; BullMQ: global concurrency = threshold.',
      'avg in flight: handler time summed over the run, divided by the run\'s length (slot utilisation × threshold).',
      'Usher also runs at threshold 50 and unlimited (worker concurrency 50), for the "threshold 50 within 2× of unlimited" target.',
    ],
    metrics: [
      { key: 'rate', label: 'exec/s', better: 'higher' },
      { key: 'avg_in_flight', label: 'avg in flight', better: 'higher' },
      { key: 'max_in_flight', label: 'max in flight', better: 'lower', digits: 0 },
    ],
    rows,
  };
}
