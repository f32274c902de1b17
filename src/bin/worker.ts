import { hostname } from 'node:os';
import { loadPacks, typescriptLoaderActive } from '../worker/packs.ts';
import { Worker } from '../worker/worker.ts';
import { openContext } from './context.ts';

export interface WorkerCommandOptions {
  readonly packs: string;
  readonly concurrency?: number;
  readonly prefetch?: number;
  readonly name?: string;
}

export async function runWorker(options: WorkerCommandOptions): Promise<void> {
  const { config, log, lifecycle, database } = await openContext('worker');
  const actions = await loadPacks(options.packs);
  if (actions.length === 0) log.warn({ event: 'worker:no_actions', packs: options.packs }, 'no handlers found; this worker will run nothing');
  // The TypeScript loader costs about 30 MB: it is there when the sources run uncompiled or a pack needs it.
  log.info({ event: 'worker:packs_loaded', packs: options.packs, actions: actions.length, typescript_loader: typescriptLoaderActive() }, 'handlers loaded');
  const worker = new Worker({
    databaseUrl: database.url,
    actions,
    concurrency: options.concurrency ?? config.workerConcurrency,
    prefetch: options.prefetch ?? config.workerPrefetch,
    name: options.name ?? `${hostname()}:${process.pid}`,
    leaseSeconds: config.leaseSeconds,
    pollIntervalMs: config.pollIntervalMs,
    poolMode: config.workerPoolMode,
    listenUrl: config.workerListenUrl,
    shutdownGraceSeconds: config.shutdownGraceSeconds,
    abortGraceSeconds: config.abortGraceSeconds,
    onFatal: () => void lifecycle.exit(1),
  }, log);
  lifecycle.onStop(() => worker.stop());
  await worker.start();
}
