import { hostname } from 'node:os';
import { loadPacks } from '../worker/packs.ts';
import { Worker } from '../worker/worker.ts';
import { openContext } from './context.ts';
import { onShutdownSignal } from './shutdown.ts';

export interface WorkerCommandOptions {
  readonly packs: string;
  readonly concurrency?: number;
  readonly name?: string;
}

export async function runWorker(options: WorkerCommandOptions): Promise<void> {
  const { config, log, database } = await openContext('worker');
  const actions = await loadPacks(options.packs);
  if (actions.length === 0) log.warn({ event: 'worker:no_actions', packs: options.packs }, 'no handlers found; this worker will run nothing');
  const worker = new Worker({
    databaseUrl: database.url,
    actions,
    concurrency: options.concurrency ?? config.workerConcurrency,
    name: options.name ?? `${hostname()}:${process.pid}`,
    leaseSeconds: config.leaseSeconds,
    pollIntervalMs: config.pollIntervalMs,
    shutdownGraceSeconds: config.shutdownGraceSeconds,
    abortGraceSeconds: config.abortGraceSeconds,
    onFatal: () => {
      void worker.stop().finally(() => database.stop()).finally(() => process.exit(1));
    },
  }, log);
  onShutdownSignal(log, async () => {
    await worker.stop();
    await database.stop();
  });
  await worker.start();
}
