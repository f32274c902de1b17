/**
 * Signal handling for process entrypoints: the first SIGTERM or SIGINT starts a graceful stop,
 * a second one exits at once.
 */
import type { Logger } from '../log.ts';

export function onShutdownSignal(log: Logger, stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  const handle = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ event: 'process:forced_exit', signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ event: 'process:stopping', signal }, 'stopping');
    stop(signal).then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ event: 'process:stop_failed', err: error }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}
