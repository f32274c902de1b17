/**
 * Where scenario 5's enqueue-to-start time goes (SQL INSERT, action without policy, one idle worker
 * at concurrency 10 in this process): timestamps of the INSERT's return, the worker's NOTIFY, its
 * claim call and the claim's answer, and the handler's start, for each of N enqueues spaced apart.
 * Usage: npx tsx bench/latency-anatomy.ts [N] [spacing ms]
 * It wraps pg's Client#query and the worker's notification handler in this process to read the
 * times; it is a diagnostic for this benchmark, not a way to run Usher.
 */
import pg from 'pg';
import { Worker } from '../src/index.ts';
import { UsherAdapter } from './adapters/usher.ts';
import { percentile } from './stats.ts';

const total = Number(process.argv[2] ?? 300);
const spacingMs = Number(process.argv[3] ?? 10);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const phases = ['sent', 'inserted', 'notified', 'claim sent', 'claim answered', 'started'] as const;
type Phase = (typeof phases)[number];
const at: Record<Phase, number[]> = Object.fromEntries(phases.map((phase) => [phase, []])) as unknown as Record<Phase, number[]>;
// The enqueue being followed; each is done long before the next is sent.
let current = -1;
const mark = (phase: Phase) => {
  if (current >= 0 && at[phase][current] === undefined) at[phase][current] = performance.now();
};

const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
(pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown }).query = function (this: pg.Client, ...args: unknown[]) {
  const first = args[0] as string | { text?: string };
  const isClaim = (typeof first === 'string' ? first : first?.text ?? '').includes('usher.claim_scheduled(');
  if (!isClaim) return query.apply(this, args);
  mark('claim sent');
  const callback = args[args.length - 1];
  // pg.Pool calls with a callback; a direct call gets a promise.
  if (typeof callback === 'function') {
    args[args.length - 1] = (...answer: unknown[]) => {
      mark('claim answered');
      return (callback as (...a: unknown[]) => unknown)(...answer);
    };
    return query.apply(this, args);
  }
  const answer = query.apply(this, args) as Promise<unknown>;
  answer.then(() => mark('claim answered'), () => {});
  return answer;
};
const workerPrototype = Worker.prototype as unknown as { onNotification(channel: string, payload: string): void };
const onNotification = workerPrototype.onNotification;
workerPrototype.onNotification = function (channel, payload) {
  if (channel === 'usher.execution_scheduled') mark('notified');
  onNotification.call(this, channel, payload);
};

const adapter = new UsherAdapter({ system: 'usher', variant: 'defaults' });
const mode = { kind: 'free' } as const;
await adapter.setup(mode);
const services = await adapter.startServices();
const workers = await adapter.startWorkers({ concurrency: 10, mode, handler: async () => mark('started') });
await sleep(500);
const begin = performance.now();
for (let seq = 0; seq < total; seq += 1) {
  const wait = begin + seq * spacingMs - performance.now();
  if (wait > 0) await sleep(wait);
  current = seq;
  at.sent[seq] = performance.now();
  await adapter.enqueueOne({ seq });
  at.inserted[seq] = performance.now();
}
await sleep(200);
current = -1;
await workers.stop();
await services.stop();
await adapter.close();

const row = (label: string, from: Phase, to: Phase) => {
  const spans = at.sent.map((_, seq) => at[to][seq]! - at[from][seq]!).filter(Number.isFinite);
  const ms = (p: number) => percentile(spans, p).toFixed(2).padStart(6);
  console.log(`${label.padEnd(36)} p50 ${ms(50)}  p95 ${ms(95)}  p99 ${ms(99)}  (${spans.length} of ${total})`);
};
console.log(`${total} single INSERTs ${spacingMs} ms apart, ms:`);
row('INSERT call until it returns', 'sent', 'inserted');
row('INSERT call until the NOTIFY arrives', 'sent', 'notified');
row('NOTIFY until the claim is sent', 'notified', 'claim sent');
row('claim call until its answer', 'claim sent', 'claim answered');
row('claim answer until the handler starts', 'claim answered', 'started');
row('INSERT call until the handler starts', 'sent', 'started');
