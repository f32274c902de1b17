/** 2. Strict FIFO: one lane, one at a time, each system in its strictest serial mode. */
import { drain } from '../drain.ts';
import { measure, withoutUsherFast, percentile, type RunContext, type ScenarioResult } from '../stats.ts';

export async function strictFifo(ctx: RunContext): Promise<ScenarioResult> {
  const total = ctx.quick ? 300 : 2_000;
  const capMs = ctx.quick ? 8_000 : 10_000;
  const mode = { kind: 'serial' } as const;
  const rows = await measure(ctx, 'serial', withoutUsherFast(ctx.configs), async (adapter) => {
    await adapter.setup(mode);
    await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq })), mode);
    const result = await drain(adapter, { total, concurrency: 10, mode, handlerMs: 0, capMs, processes: 0 });
    const { spans } = result;
    let violations = 0;
    const handoffs: number[] = [];
    for (let i = 1; i < spans.length; i += 1) {
      if (spans[i]!.seq !== spans[i - 1]!.seq + 1) violations += 1;
      if (spans[i - 1]!.end > 0) handoffs.push(spans[i]!.start - spans[i - 1]!.end);
    }
    if (spans[0] && spans[0].seq !== 0) violations += 1;
    return {
      values: {
        rate: result.done / (result.elapsedMs / 1000),
        violations,
        max_in_flight: result.maxInFlight,
        handoff_p50: percentile(handoffs, 50),
        handoff_p99: percentile(handoffs, 99),
      },
      capped: result.capped,
    };
  });
  return {
    id: 's2',
    title: `2. Strict FIFO, one lane, threshold 1 (${total.toLocaleString('en')} no-op jobs, one worker at concurrency 10)`,
    notes: [
      'Serial modes: Usher policy threshold 1; graphile-worker a named queue; pg-boss 10 the `singleton` queue policy (it has no key_strict_fifo); BullMQ global concurrency 1.',
      'violations: starts whose job is not the next in enqueue order. handoff: from a handler\'s return to the next handler\'s start, ms.',
      `Each run is capped at ${capMs / 1000} s.`,
    ],
    metrics: [
      { key: 'rate', label: 'exec/s', better: 'higher' },
      { key: 'violations', label: 'order violations', better: 'lower', digits: 0 },
      { key: 'max_in_flight', label: 'max in flight', better: 'lower', digits: 0 },
      { key: 'handoff_p50', label: 'handoff p50 ms', better: 'lower' },
      { key: 'handoff_p99', label: 'handoff p99 ms', better: 'lower' },
    ],
    rows,
  };
}
