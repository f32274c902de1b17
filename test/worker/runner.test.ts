/**
 * A handler's ctx in one process, without a database: its signal and its logger are made only
 * when the handler reads them, and behave the same whether read before or after an abort.
 */
import { describe, expect, it } from 'vitest';
import { createLogger, type Logger } from '../../src/log.ts';
import { RunningExecution, runHandler, type HandlerContext } from '../../src/worker/runner.ts';

function running(id = 7): RunningExecution {
  return new RunningExecution(
    { id: String(id), action_ref: 'a.b', params: { n: id }, attempt: 2, lease_token: `token-${id}`, timeout_seconds: 60 },
    performance.now(),
  );
}

/** A log function that counts how often the worker was asked for the execution's logger. */
function countingLog() {
  const log = createLogger('silent');
  const calls = { count: 0 };
  return { calls, logOf: (): Logger => { calls.count += 1; return log; } };
}

const grace = 60_000;

describe('handler context', () => {
  it('gives a handler that reads neither its logger nor its signal a completion, asking for no logger', async () => {
    const { calls, logOf } = countingLog();
    const outcome = await runHandler((params) => ({ doubled: (params.n as number) * 2 }), running(), logOf, grace);
    expect(outcome).toEqual({ kind: 'completed', resultJson: '{"doubled":14}' });
    expect(calls.count).toBe(0);
  });

  it('asks for the logger when the handler reads ctx.log, and gives the execution its id, action and attempt', async () => {
    const { calls, logOf } = countingLog();
    let seen: HandlerContext['execution'] | undefined;
    await runHandler((_params, ctx) => {
      ctx.log.info('one');
      ctx.log.info('two');
      seen = ctx.execution;
    }, running(), logOf, grace);
    expect(calls.count).toBe(2);
    expect(seen).toEqual({ id: '7', action_ref: 'a.b', attempt: 2 });
  });

  it('fires the abort event, once, on a signal read before the abort', async () => {
    const execution = running();
    const events: string[] = [];
    const outcome = runHandler(async (_params, { signal }) => {
      expect(signal.aborted).toBe(false);
      signal.addEventListener('abort', () => events.push(`${(signal.reason as Error).name}: ${(signal.reason as Error).message}`));
      execution.abort('cancel');
      execution.abort('shutdown');
      return 'done';
    }, execution, countingLog().logOf, grace);
    // A handler that finished despite the abort did its work: its result stands.
    expect(await outcome).toEqual({ kind: 'completed', resultJson: '"done"' });
    expect(events).toEqual(['AbortError: execution 7 aborted: cancel']);
  });

  it('gives an aborted signal, with the reason, to a handler that reads it only after the abort', async () => {
    const execution = running(8);
    let state: { aborted: boolean; reason: string } | undefined;
    const outcome = await runHandler(async (_params, ctx) => {
      execution.abort('timeout');
      state = { aborted: ctx.signal.aborted, reason: `${(ctx.signal.reason as Error).name}: ${(ctx.signal.reason as Error).message}` };
    }, execution, countingLog().logOf, grace);
    expect(state).toEqual({ aborted: true, reason: 'TimeoutError: execution 8 aborted: timeout' });
    expect(outcome).toEqual({ kind: 'timeout', error: 'ran past timeout_seconds = 60' });
  });

  it('gives up on a handler that ignores an abort once the grace period is over', async () => {
    const execution = running(9);
    const outcome = runHandler(() => new Promise(() => {}), execution, countingLog().logOf, 20);
    execution.abort('shutdown');
    expect(await outcome).toEqual({ kind: 'aborted', cause: 'shutdown' });
  });

  it('lets a handler destructure pauseLaneUntil and call it unbound', async () => {
    const until = new Date(Date.now() + 60_000);
    const outcome = await runHandler((_params, { pauseLaneUntil }) => pauseLaneUntil(until, '429'), running(), countingLog().logOf, grace);
    expect(outcome).toEqual({ kind: 'postponed', until, reason: '429' });
  });
});
