/** 4. Many lanes: L lanes × K jobs, one at a time in each lane, enqueued interleaved. */
import { drain } from '../drain.ts';
import { measure, type RunContext, type ScenarioResult } from '../stats.ts';

export async function manyLanes(ctx: RunContext): Promise<ScenarioResult> {
  const lanes = ctx.quick ? 100 : 1_000;
  const perLane = ctx.quick ? 5 : 20;
  const total = lanes * perLane;
  const capMs = ctx.quick ? 10_000 : 20_000;
  const mode = { kind: 'lanes' } as const;
  const rows = await measure(ctx, `${lanes} lanes`, ctx.configs, async (adapter) => {
    await adapter.setup(mode);
    await adapter.enqueueBulk(Array.from({ length: total }, (_, seq) => ({ seq, lane: seq % lanes })), mode);
    const result = await drain(adapter, { total, concurrency: 50, mode, handlerMs: 0, capMs, processes: 0 });
    // Per lane: each start must be the lane's next job, and start after the previous one ended.
    const last = new Map<number, { seq: number; end: number }>();
    let violations = 0;
    let overlaps = 0;
    for (const span of result.spans) {
      const previous = last.get(span.lane!);
      const expected = previous ? previous.seq + lanes : span.lane!;
      if (span.seq !== expected) violations += 1;
      if (previous && (previous.end === 0 || previous.end > span.start)) overlaps += 1;
      last.set(span.lane!, span);
    }
    return { values: { rate: result.done / (result.elapsedMs / 1000), violations, overlaps }, capped: result.capped };
  });
  return {
    id: 's4',
    title: `4. Many lanes (${lanes.toLocaleString('en')} lanes × ${perLane} no-op jobs, threshold 1 per lane, one worker at concurrency 50)`,
    notes: [
      'Lanes: Usher a threshold-1 policy grouped by params.lane; graphile-worker one named queue per lane; pg-boss the singleton policy with a singletonKey per lane; BullMQ needs groups (BullMQ Pro): not run.',
      'violations: starts that are not the next job of their lane; overlaps: starts before the lane\'s previous job ended.',
      `Each run is capped at ${capMs / 1000} s.`,
    ],
    metrics: [
      { key: 'rate', label: 'exec/s', better: 'higher' },
      { key: 'violations', label: 'lane order violations', better: 'lower', digits: 0 },
      { key: 'overlaps', label: 'lane overlaps', better: 'lower', digits: 0 },
    ],
    rows,
  };
}
