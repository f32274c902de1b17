/**
 * A worker process of the benchmark: connects one system's adapter, starts its workers on the
 * parent's word, counts finished handlers and reports the count and its memory every 20 ms.
 */
import { makeAdapter } from './adapters/index.ts';
import type { Mode, SystemConfig } from './adapters/types.ts';

const { config, mode, concurrency, handlerMs } = JSON.parse(process.argv[2]!) as {
  config: SystemConfig; mode: Mode; concurrency: number; handlerMs: number;
};
const send = (message: object) => process.send?.(message);
// The harness drops databases `with (force)` between runs; a connection ended that way is not a failure.
process.on('uncaughtException', (error: Error & { code?: string }) => {
  if (error.code === '57P01') return;
  send({ type: 'error', error: String(error.stack ?? error) });
  process.exit(1);
});
// A peer's fire-and-forget call that fails is that system's trouble, seen in its counts.
process.on('unhandledRejection', () => undefined);
const adapter = makeAdapter(config);
let done = 0;
let maxRss = 0;
const report = () => {
  maxRss = Math.max(maxRss, process.memoryUsage.rss());
  send({ type: 'progress', done, rss: maxRss });
};

try {
  await adapter.connect(mode);
  let workers: { stop(): Promise<void> } | undefined;
  let timer: NodeJS.Timeout | undefined;
  process.on('message', async (message: { type: string }) => {
    try {
      if (message.type === 'start') {
        timer = setInterval(report, 20);
        workers = await adapter.startWorkers({
          concurrency,
          mode,
          handler: async () => {
            if (handlerMs > 0) await new Promise((resolve) => setTimeout(resolve, handlerMs));
            done += 1;
          },
        });
      } else if (message.type === 'stop') {
        clearInterval(timer);
        report();
        await workers?.stop();
        await adapter.close();
        send({ type: 'stopped', done, rss: maxRss });
        process.disconnect();
        process.exit(0);
      }
    } catch (error) {
      send({ type: 'error', error: String((error as Error).stack ?? error) });
      process.exit(1);
    }
  });
  send({ type: 'ready' });
} catch (error) {
  send({ type: 'error', error: String((error as Error).stack ?? error) });
  process.exit(1);
}
