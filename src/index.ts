/** Usher's TypeScript API: the client (enqueue, enqueueMany, get, cancel, waitFor), or embed a worker or executor. */
export { createClient, type ClientOptions, type EnqueueManyOptions, type EnqueueOptions, type UsherClient, type WaitOptions } from './client.ts';
export type { ExecutionRecord } from './queue/executions-read.ts';
export { enqueue, enqueueMany, type EnqueueInput } from './queue/enqueue.ts';
export { cancelExecution, type CancelResult } from './queue/cancel.ts';
export { checkInvariants, getExecution, laneStats, queueStats } from './queue/stats.ts';
export type { ClaimedExecution, Execution } from './queue/types.ts';
export type { ExecutionStatus } from './db/schema.ts';
export { UsherError, type UsherErrorCode } from './errors.ts';
export { Worker, type WorkerOptions } from './worker/worker.ts';
export { loadPacks } from './worker/packs.ts';
export { NonRetryableError, type Handler, type HandlerContext } from './worker/runner.ts';
export { Executor, type ExecutorOptions } from './executor/executor.ts';
export { migrate } from './db/migrator.ts';
