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

