/**
 * Running workers until a queue is drained: in this process (every start and end recorded, for
 * order, in-flight and latency figures) or in N child processes (counts and memory only).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Adapter, Job, Mode, SystemConfig } from './adapters/types.ts';

export interface Span {
  readonly seq: number;
  readonly lane: number | undefined;
  readonly start: number;
  end: number;
}

export interface DrainResult {
  readonly elapsedMs: number;
  readonly done: number;
  /** True when the run hit its time cap before the queue was empty. */
  readonly capped: boolean;
  readonly maxInFlight: number;
  /** Handler spans in start order (in-process runs only). */
  readonly spans: Span[];
  /** Largest resident set size of a worker process, bytes (child-process runs only). */
  readonly maxWorkerRss: number;
}

export interface DrainOptions {
  readonly total: number;
  readonly concurrency: number;
  readonly mode: Mode;
  readonly handlerMs: number;
  readonly capMs: number;
  /** 0: workers in this process; N: N child processes. */
  readonly processes: number;
  /** Stop once `total` handlers ran, without waiting for the queue to be empty (more jobs wait behind). */
  readonly leaveRest?: boolean;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitDrained(adapter: Adapter, deadline: number): Promise<boolean> {
  while (performance.now() < deadline) {
    if ((await adapter.remaining()) === 0) return true;
    await sleep(5);
  }
  return false;
}

/** The queue holds `total` jobs; start workers, time until every job ran and is marked done. */
export async function drain(adapter: Adapter, options: DrainOptions): Promise<DrainResult> {
  return options.processes === 0 ? drainInProcess(adapter, options) : drainInChildren(adapter, options);
}

export function recorder(handlerMs: number) {
  const spans: Span[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const handler = async (job: Job) => {
    inFlight += 1;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    const span: Span = { seq: job.seq, lane: job.lane, start: performance.now(), end: 0 };
    spans.push(span);
    // A no-op still yields once, so jobs handed out together overlap and show in max in flight.
    await (handlerMs > 0 ? sleep(handlerMs) : new Promise((resolve) => setImmediate(resolve)));
    span.end = performance.now();
    inFlight -= 1;
  };
  return { spans, handler, maxInFlight: () => maxInFlight };
}

async function drainInProcess(adapter: Adapter, options: DrainOptions): Promise<DrainResult> {
  const rec = recorder(options.handlerMs);
  const services = await adapter.startServices();
  const started = performance.now();
  const deadline = started + options.capMs;
  const workers = await adapter.startWorkers({ concurrency: options.concurrency, mode: options.mode, handler: rec.handler });
  while (rec.spans.length < options.total && performance.now() < deadline) await sleep(2);
  const drained = rec.spans.length >= options.total && (options.leaveRest || (await waitDrained(adapter, deadline)));
  const elapsedMs = performance.now() - started;
  await workers.stop();
  await services.stop();
  const done = rec.spans.filter((span) => span.end > 0).length;
  return { elapsedMs, done, capped: !drained, maxInFlight: rec.maxInFlight(), spans: rec.spans, maxWorkerRss: 0 };
}

interface ChildMessage {
  type: 'ready' | 'progress' | 'stopped' | 'error';
  done?: number;
  rss?: number;
  error?: string;
}

const workerProcess = fileURLToPath(new URL('./worker-process.ts', import.meta.url));

export function spawnWorker(config: SystemConfig, options: DrainOptions): ChildProcess {
  return fork(workerProcess, [JSON.stringify({ config, mode: options.mode, concurrency: options.concurrency, handlerMs: options.handlerMs })], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

async function drainInChildren(adapter: Adapter, options: DrainOptions): Promise<DrainResult> {
  const children = Array.from({ length: options.processes }, () => spawnWorker(adapter.config, options));
  const done = new Map<ChildProcess, number>();
  let maxWorkerRss = 0;
  let failure: string | undefined;
  const ready = children.map((child) => new Promise<void>((resolve, reject) => {
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'ready') resolve();
      if (message.done !== undefined) done.set(child, message.done);
      if (message.rss !== undefined) maxWorkerRss = Math.max(maxWorkerRss, message.rss);
      if (message.type === 'error') {
        failure = message.error;
        reject(new Error(message.error));
      }
    });
    child.on('exit', (code) => code !== 0 && reject(new Error(`worker process exited with ${code}`)));
  }));
  const exited = children.map((child) => new Promise<void>((resolve) => child.on('exit', () => resolve())));
  const services = await adapter.startServices();
  try {
    await Promise.all(ready);
    const started = performance.now();
    const deadline = started + options.capMs;
    for (const child of children) child.send({ type: 'start' });
    const total = () => [...done.values()].reduce((sum, n) => sum + n, 0);
    while (total() < options.total && performance.now() < deadline && !failure) await sleep(5);
    const drained = total() >= options.total && (options.leaveRest || (await waitDrained(adapter, deadline)));
    const elapsedMs = performance.now() - started;
    for (const child of children) child.send({ type: 'stop' });
    await Promise.race([Promise.all(exited), sleep(20_000)]);
    if (failure) throw new Error(failure);
    return { elapsedMs, done: total(), capped: !drained, maxInFlight: 0, spans: [], maxWorkerRss };
  } finally {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    await services.stop();
  }
}
