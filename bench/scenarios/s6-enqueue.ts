/** 6. Enqueue rate: single-row enqueues from 10 concurrent producers, and bulk enqueues; no workers. */
import type { Adapter, Job, Mode } from '../adapters/types.ts';
import { UsherAdapter } from '../adapters/usher.ts';
import { measure, withoutUsherFast, type RunContext, type ScenarioResult } from '../stats.ts';

const PRODUCERS = 10;

async function singles(adapter: Adapter, total: number, mode: Mode): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: PRODUCERS }, async () => {
    while (next < total) {
      const seq = next;
      next += 1;
      await adapter.enqueueOne({ seq }, mode);
    }
  }));
  return total / ((performance.now() - started) / 1000);
}

async function bulk(adapter: Adapter, total: number, mode: Mode): Promise<number> {
  const jobs: Job[] = Array.from({ length: total }, (_, seq) => ({ seq }));
  const started = performance.now();
  for (let i = 0; i < total; i += 1000) await adapter.enqueueBulk(jobs.slice(i, i + 1000), mode);
  return total / ((performance.now() - started) / 1000);
}

export async function enqueueRate(ctx: RunContext): Promise<ScenarioResult> {
  const single = ctx.quick ? 1_000 : 5_000;
  const many = ctx.quick ? 5_000 : 50_000;
  const mode = { kind: 'free' } as const;
  const once = (withWakeup: boolean) => async (adapter: Adapter) => {
    await adapter.setup(mode);
    if (!withWakeup) {
      if (!(adapter instanceof UsherAdapter)) throw new Error('only Usher can enqueue without its wake-up');
      await adapter.withoutEnqueueWakeup();
    }
    return { values: { single: await singles(adapter, single, mode), bulk: await bulk(adapter, many, mode) } };
  };
  const rows = await measure(ctx, 'with wake-up', withoutUsherFast(ctx.configs), once(true));
  const usher = withoutUsherFast(ctx.configs).filter((config) => config.system === 'usher');
  if (usher.length > 0) rows.push(...await measure(ctx, 'Usher, usher.enqueue_wakeup = off', usher, once(false)));
  return {
    id: 's6',
    title: `6. Enqueue rate (${single.toLocaleString('en')} single enqueues from ${PRODUCERS} producers; ${many.toLocaleString('en')} in bulk, 1,000 a statement)`,
    notes: [
      'Single: each enqueue its own statement and commit (Usher: INSERT; graphile-worker: add_job; pg-boss: send; BullMQ: add). Bulk: Usher one INSERT … SELECT per 1,000; graphile-worker addJobs; pg-boss insert; BullMQ addBulk.',
      'The last rows run Usher\'s producers with `set usher.enqueue_wakeup = off` (no NOTIFY at their commits; the executor and workers find the rows on their poll), to show what the wake-up costs.',
    ],
    metrics: [
      { key: 'single', label: 'single enqueues/s', better: 'higher' },
      { key: 'bulk', label: 'bulk enqueues/s', better: 'higher' },
    ],
    rows,
  };
}
