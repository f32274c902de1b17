/**
 * Structured logs: one JSON object per line with `ts`, `level`, `event` (`noun:verb`) and `msg`.
 * pino is the logger: it is fast, writes JSON lines natively and is widely used in Node services.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: bindings,
    messageKey: 'msg',
    timestamp: () => `,"ts":"${new Date().toISOString()}"`,
    formatters: {
      level: (label) => ({ level: label }),
    },
    serializers: { err: pino.stdSerializers.err },
  });
}

/**
 * The log of a loop that keeps failing while the database is away or refusing writes: its first
 * failure at warn, then at most one warn every `warnEveryMs` (carrying the count so far) and the
 * rest at debug, and one info line once it succeeds again. An outage of any length costs a few
 * lines per loop, not one per retry.
 */
export class FailureStreak {
  private failures = 0;
  private startedAt = 0;
  private lastWarnAt = -Infinity;

  constructor(private readonly event: string, private readonly recoveredEvent: string, private readonly warnEveryMs = 10_000) {}

  /** Failures since the last success, for the backoff. */
  get inARow(): number {
    return this.failures;
  }

  /** Records a failure and logs it; returns how many failed in a row, for the backoff. */
  failed(log: Logger, err: unknown, message: string): number {
    this.failures += 1;
    const now = Date.now();
    if (this.failures === 1) this.startedAt = now;
    const fields = { event: this.event, err, failures: this.failures };
    if (now - this.lastWarnAt >= this.warnEveryMs) {
      this.lastWarnAt = now;
      log.warn(fields, message);
    } else {
      log.debug(fields, message);
    }
    return this.failures;
  }

  succeeded(log: Logger, message: string): void {
    if (this.failures === 0) return;
    log.info({ event: this.recoveredEvent, failures: this.failures, failing_ms: Date.now() - this.startedAt }, message);
    this.failures = 0;
    this.lastWarnAt = -Infinity;
  }
}
