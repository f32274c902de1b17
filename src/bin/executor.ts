import { hostname } from 'node:os';
import { Executor } from '../executor/executor.ts';
import { openContext } from './context.ts';

export async function runExecutor(options: { name?: string }): Promise<void> {
  const { config, log, lifecycle, database } = await openContext('executor');
  const executor = new Executor({
    databaseUrl: database.url,
    name: options.name ?? `${hostname()}:${process.pid}`,
    leaseSeconds: config.leaseSeconds,
    pollIntervalMs: config.pollIntervalMs,
    sweepIntervalMs: config.sweepIntervalMs,
    idleLaneSeconds: config.idleLaneSeconds,
    eventRetentionSeconds: config.eventRetentionSeconds,
    retentionDays: config.retentionDays,
    auditRetentionDays: config.auditRetentionDays,
  }, log);
  lifecycle.onStop(() => executor.stop());
  executor.start();
}
