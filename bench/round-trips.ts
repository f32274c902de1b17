/**
 * Round trips per execution on Usher's worker path: every statement a worker sends on its
 * claim/mark connections (application_name `usher-worker:…`) is counted by wrapping pg's
 * Client#query, while a worker drains a known number of executions. Counts do not depend on the
 * machine's speed the way times do, so CI asserts them: a change that adds a statement per
 * execution fails `npm run bench:quick`.
 */
import pg from 'pg';
import type { Mode } from './adapters/types.ts';
import { UsherAdapter } from './adapters/usher.ts';
import { drain } from './drain.ts';

export interface RoundTripCase {
  readonly name: string;
  readonly mode: Mode;
  readonly total: number;
  readonly concurrency: number;
  /** fast: the worker claims ahead (prefetch 500). */
  readonly variant: 'defaults' | 'fast';
  /** Upper bound on worker statements per execution; the build fails above it. */
  readonly maxPerExecution: number;
}

export interface RoundTripResult extends RoundTripCase {
  readonly statements: number;
  readonly byKind: Record<string, number>;
  readonly perExecution: number;
}

const counts = new Map<string, number>();
let counting = false;

/** Counts queries on connections whose application_name starts with usher-worker: (not heartbeat, not listen). */
function installCounter(): void {
  const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown; __counted?: boolean };
  if (proto.__counted) return;
  proto.__counted = true;
  const original = proto.query;
  proto.query = function counted(this: { connectionParameters?: { application_name?: string } }, ...args: unknown[]) {
    const app = this.connectionParameters?.application_name ?? '';
    if (counting && app.startsWith('usher-worker:')) {
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string } | undefined)?.text ?? '';
      const kind = /usher\.([a-z_]+)\(/.exec(text)?.[1] ?? text.trim().split(/\s+/).slice(0, 2).join(' ');
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
    }
    return original.apply(this, args);
  };
}

export const cases: readonly RoundTripCase[] = [
  // One lane, threshold 1: complete_and_claim ends one execution, admits the next and claims it in
  // one transaction, and wakes nobody (it claimed what it admitted): 1 statement, 1 commit per execution.
  { name: 'strict FIFO lane (threshold 1)', mode: { kind: 'serial' }, total: 300, concurrency: 10, variant: 'defaults', maxPerExecution: 1.05 },
  // No limit, concurrency 10: the ten handlers claimed together return together, and one
  // complete_and_claim ends all ten and claims the next ten: 0.1 per execution.
  { name: 'no limit, concurrency 10', mode: { kind: 'free' }, total: 2000, concurrency: 10, variant: 'defaults', maxPerExecution: 0.15 },
  // The same with prefetch 500: handlers run from the local line while batches of completions
  // (as many as returned during the previous round trip) go out.
  { name: 'no limit, concurrency 10, prefetch 500', mode: { kind: 'free' }, total: 5000, concurrency: 10, variant: 'fast', maxPerExecution: 0.05 },
];

export async function measureRoundTrips(testCase: RoundTripCase): Promise<RoundTripResult> {
  installCounter();
  const adapter = new UsherAdapter({ system: 'usher', variant: testCase.variant });
  try {
    await adapter.setup(testCase.mode);
    await adapter.enqueueBulk(Array.from({ length: testCase.total }, (_, seq) => ({ seq })));
    counts.clear();
    counting = true;
    const result = await drain(adapter, { total: testCase.total, concurrency: testCase.concurrency, mode: testCase.mode, handlerMs: 0, capMs: 30_000, processes: 0 });
    counting = false;
    if (result.capped) throw new Error(`${testCase.name}: did not drain within 30 s`);
    // Registration and the stop mark are per worker, not per execution.
    counts.delete('register_worker');
    counts.delete('stop_worker');
    const statements = [...counts.values()].reduce((sum, n) => sum + n, 0);
    return { ...testCase, statements, byKind: Object.fromEntries(counts), perExecution: statements / testCase.total };
  } finally {
    counting = false;
    await adapter.close();
  }
}
