/**
 * Signal handling for process entrypoints, installed before anything starts: the first SIGTERM or
 * SIGINT runs the stop steps registered so far (last registered first) and exits; a second exits at once.
 */
import type { Logger } from '../log.ts';

export class Lifecycle {
  private readonly steps: (() => Promise<void>)[] = [];
  private stopping = false;

  constructor(private readonly log: Logger) {
    process.on('SIGTERM', (signal) => this.handle(signal));
    process.on('SIGINT', (signal) => this.handle(signal));
  }

  /** Adds a stop step; steps run in reverse order of registration. */
  onStop(step: () => Promise<void>): void {
    this.steps.push(step);
  }

  /** Stops everything registered and exits with `code`. */
  async exit(code: number): Promise<never> {
    this.stopping = true;
    for (const step of [...this.steps].reverse()) {
      await step().catch((error: unknown) => this.log.error({ event: 'process:stop_failed', err: error }, 'a stop step failed'));
    }
    process.exit(code);
  }

  private handle(signal: NodeJS.Signals): void {
    if (this.stopping) {
      this.log.warn({ event: 'process:forced_exit', signal }, 'second signal: exiting now');
      process.exit(1);
    }
    this.log.info({ event: 'process:stopping', signal }, 'stopping');
    void this.exit(0);
  }
}
