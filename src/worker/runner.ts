/**
 * Runs one claimed execution's handler in this process and turns whatever happens (a value, a
 * throw, a timeout, an abort, a result that cannot be stored) into one outcome to report.
 */
import type { Logger } from '../log.ts';
import type { ClaimedExecution } from '../queue/types.ts';

export type AbortCause = 'timeout' | 'cancel' | 'shutdown' | 'lease_lost';

/**
 * A handler's second argument. `log` and `signal` are getters, made on first read (most handlers
 * read neither): destructuring (`{ log, signal }`) reads them; spreading ctx copies only `execution`.
 */
export interface HandlerContext {
  readonly execution: { readonly id: string; readonly action_ref: string; readonly attempt: number };
  readonly log: Logger;
  /** Fires on timeout, cancel, shutdown or a lost lease; `signal.reason` is an Error naming which. */
  readonly signal: AbortSignal;
  /**
   * For an upstream limit (HTTP 429 with Retry-After): puts this execution back at the head of its
   * lane, with no attempt charged, and pauses the whole lane until `until`. Never returns.
   */
  pauseLaneUntil(until: Date, reason?: string): never;
}

/** Thrown by ctx.pauseLaneUntil; the worker turns it into a postponement. */
export class LanePause extends Error {
  constructor(readonly until: Date, readonly reason: string | undefined) {
    super(`lane paused until ${until.toISOString()}${reason ? `: ${reason}` : ''}`);
    this.name = 'LanePause';
  }
}

/**
 * An error a handler throws when trying again cannot help (bad input, a permanent refusal):
 * the execution fails at once, whatever retries are left. Any error with `retryable: false` counts too.
 */
export class NonRetryableError extends Error {
  readonly retryable = false;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NonRetryableError';
  }
}

export type Handler = (params: Record<string, unknown>, ctx: HandlerContext) => unknown;

export type Outcome =
  | { kind: 'completed'; resultJson: string }
  | { kind: 'failed'; error: string; resultJson: string; retryable: boolean }
  | { kind: 'timeout'; error: string }
  | { kind: 'postponed'; until: Date; reason: string | undefined }
  | { kind: 'aborted'; cause: Exclude<AbortCause, 'timeout'> };

/** One execution in flight on this worker. */
export class RunningExecution {
  cause: AbortCause | undefined;
  /**
   * performance.now() when the request that last set this lease's expiry was sent. The database
   * cannot expire the lease earlier than a lease's length after it. Durations only, never wall-clock time.
   */
  leaseRenewalSentAt: number;
  /** Called once, when the execution is aborted while its handler runs. */
  onAbort: (() => void) | undefined;
  // Made when the handler first reads ctx.signal: most handlers never do, and making an
  // AbortController was a tenth of a no-op execution's time in this process.
  private controller: AbortController | undefined;
  private abortError: Error | undefined;

  constructor(readonly claim: ClaimedExecution, claimSentAt: number) {
    this.leaseRenewalSentAt = claimSentAt;
  }

  /** Aborts on timeout, cancel, shutdown or a lost lease; already aborted if read after that. */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortError) this.controller.abort(this.abortError);
    }
    return this.controller.signal;
  }

  abort(cause: AbortCause): void {
    if (this.cause) return;
    this.cause = cause;
    const error = new Error(`execution ${this.claim.id} aborted: ${cause}`);
    error.name = cause === 'timeout' ? 'TimeoutError' : 'AbortError';
    this.abortError = error;
    this.controller?.abort(error);
    this.onAbort?.();
  }
}

const MAX_ERROR_LENGTH = 10_000;
// setTimeout fires at once for delays past 2^31-1 ms.
const MAX_TIMER_MS = 2_147_483_647;

export function describeError(thrown: unknown): { name: string; message: string } {
  if (thrown instanceof Error) return { name: thrown.name, message: thrown.message };
  let message: string;
  try {
    message = typeof thrown === 'string' ? thrown : JSON.stringify(thrown) ?? String(thrown);
  } catch {
    message = String(thrown);
  }
  return { name: 'NonErrorThrown', message };
}

function failure(name: string, message: string, retryable = true): Outcome {
  const text = `${name}: ${message}`.slice(0, MAX_ERROR_LENGTH);
  return { kind: 'failed', error: text, resultJson: JSON.stringify({ error: { name, message: message.slice(0, MAX_ERROR_LENGTH) } }), retryable };
}

/** Results sit in the hot table and go to everyone who reads the execution: bulky output belongs elsewhere. */
export const MAX_RESULT_BYTES = 1024 * 1024;

// JSON.stringify writes U+0000 as \u0000 (after an even run of backslashes), which jsonb refuses.
const NUL_ESCAPE = /(?:^|[^\\])(?:\\\\)*\\u0000/;

/** JSON text of a handler's return value; undefined becomes null. */
export function serializeResult(value: unknown): { ok: true; json: string } | { ok: false; reason: string } {
  try {
    const json = JSON.stringify(value) ?? 'null';
    // Caught here, it fails this execution alone rather than the batch of completions it would join.
    if (NUL_ESCAPE.test(json)) {
      return { ok: false, reason: "the handler's return value contains the character U+0000, which Postgres jsonb cannot store" };
    }
    const bytes = Buffer.byteLength(json);
    if (bytes > MAX_RESULT_BYTES) {
      return { ok: false, reason: `the handler's return value is ${bytes} bytes of JSON, over the limit of ${MAX_RESULT_BYTES} bytes` };
    }
    return { ok: true, json };
  } catch (error) {
    return { ok: false, reason: `the handler's return value is not JSON-serialisable: ${describeError(error).message}` };
  }
}

/** A result that cannot be stored will not become storable on a retry. */
export function failureFromReason(reason: string): Outcome {
  return failure('ResultNotStorable', reason, false);
}

/**
 * A handler's ctx. A class rather than an object literal with the two getters: the literal's
 * closures kept each execution's call frame alive, and the worker spent twice as long collecting garbage.
 */
class ExecutionContext implements HandlerContext {
  readonly execution: HandlerContext['execution'];
  readonly #running: RunningExecution;
  readonly #logOf: () => Logger;

  constructor(running: RunningExecution, logOf: () => Logger) {
    const { claim } = running;
    this.execution = { id: claim.id, action_ref: claim.action_ref, attempt: claim.attempt };
    this.#running = running;
    this.#logOf = logOf;
  }

  get log(): Logger {
    return this.#logOf();
  }

  get signal(): AbortSignal {
    return this.#running.signal;
  }

  pauseLaneUntil(until: Date, reason?: string): never {
    if (!(until instanceof Date) || Number.isNaN(until.getTime())) {
      throw new NonRetryableError(`ctx.pauseLaneUntil needs a valid Date, got ${String(until)}`);
    }
    throw new LanePause(until, reason);
  }
}

/** `log` is called when the handler first reads ctx.log: a child logger is made only for handlers that log. */
export async function runHandler(handler: Handler, running: RunningExecution, log: () => Logger, abortGraceMs: number): Promise<Outcome> {
  const { claim } = running;
  const timeoutTimer = setTimeout(() => running.abort('timeout'), Math.min(claim.timeout_seconds * 1000, MAX_TIMER_MS));
  let graceTimer: NodeJS.Timeout | undefined;
  const graceOver = new Promise<'grace_over'>((resolve) => {
    running.onAbort = () => {
      graceTimer = setTimeout(() => resolve('grace_over'), abortGraceMs);
    };
  });
  const ctx = new ExecutionContext(running, log);
  const settled = Promise.resolve()
    .then(() => handler(claim.params, ctx))
    .then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }));

  const first = await Promise.race([settled, graceOver]);
  clearTimeout(timeoutTimer);
  clearTimeout(graceTimer);

  if (running.cause === 'timeout') {
    return { kind: 'timeout', error: `ran past timeout_seconds = ${claim.timeout_seconds}` };
  }
  if (first === 'grace_over') {
    return { kind: 'aborted', cause: running.cause ?? 'shutdown' };
  }
  if (first.ok) {
    // A handler that finished despite an abort did its work: its result stands.
    const serialized = serializeResult(first.value);
    return serialized.ok ? { kind: 'completed', resultJson: serialized.json } : failureFromReason(serialized.reason);
  }
  if (first.error instanceof LanePause) return { kind: 'postponed', until: first.error.until, reason: first.error.reason };
  if (running.cause) return { kind: 'aborted', cause: running.cause };
  const { name, message } = describeError(first.error);
  const retryable = (first.error as { retryable?: unknown } | null)?.retryable !== false;
  return failure(name, message, retryable);
}
