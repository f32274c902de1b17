/** The configurations a run compares, and the adapter for each. */
import { BullmqAdapter } from './bullmq.ts';
import { GraphileWorkerAdapter } from './graphile-worker.ts';
import { PgBossAdapter } from './pg-boss.ts';
import type { Adapter, SystemConfig } from './types.ts';
import { UsherAdapter } from './usher.ts';

export const allConfigs: readonly SystemConfig[] = [
  { system: 'usher', variant: 'defaults' },
  { system: 'usher', variant: 'fast' },
  { system: 'graphile-worker', variant: 'defaults' },
  { system: 'graphile-worker', variant: 'fast' },
  { system: 'pg-boss', variant: 'defaults' },
  { system: 'pg-boss', variant: 'fast' },
  { system: 'bullmq', variant: 'defaults' },
];

export function makeAdapter(config: SystemConfig): Adapter {
  switch (config.system) {
    case 'usher':
      return new UsherAdapter(config);
    case 'graphile-worker':
      return new GraphileWorkerAdapter(config);
    case 'pg-boss':
      return new PgBossAdapter(config);
    case 'bullmq':
      return new BullmqAdapter(config);
  }
}
