import { hostname } from 'node:os';
import { Executor } from '../executor/executor.ts';
import { openContext } from './context.ts';
import { onShutdownSignal } from './shutdown.ts';

export async function runExecutor(options: { name?: string }): Promise<void> {
  const { config, log, database } = await openContext('executor');
  const executor = new Executor({
    databaseUrl: database.url,
    name: options.name ?? `${hostname()}:${process.pid}`,
    leaseSeconds: config.leaseSeconds,
    pollIntervalMs: config.pollIntervalMs,
    sweepIntervalMs: config.sweepIntervalMs,
    idleLaneSeconds: config.idleLaneSeconds,
  }, log);
  onShutdownSignal(log, async () => {
    await executor.stop();
    await database.stop();
  });
  executor.start();
}
