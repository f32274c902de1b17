/**
 * One Server-Sent Events response of GET /executions/stream. It reads the event log from its own
 * position whenever the follower says the log moved on, so what it sends is the log itself, in
 * order and without gaps: a client that reconnects with Last-Event-ID continues exactly there.
 */
import { once } from 'node:events';
import type { Request, Response } from 'express';
import type { Logger } from '../log.ts';
import { firstEventPosition, lastEventPosition, readExecutionEvents, sequenceExecutionEvents, type EventFilter, type ExecutionEvent } from '../queue/events.ts';
import { Wakeup } from '../wakeup.ts';
import type { ApiDeps } from './route.ts';

const batchSize = 500;
const keepAliveMs = 15_000;

export interface StreamRequest {
  readonly filter: EventFilter;
  /** Position to continue after (Last-Event-ID); absent: start with what happens from now on. */
  readonly after?: string;
  readonly requestId: string;
}

export async function streamExecutionEvents(deps: ApiDeps, stream: StreamRequest, req: Request, res: Response): Promise<void> {
  let cursor = stream.after ?? await startOfNow(deps);
  const first = stream.after === undefined ? null : await firstEventPosition(deps.pool);
  res.status(200).set({
    'Content-Type': 'text/event-stream; charset=utf-8',
    'X-Accel-Buffering': 'no',
    Connection: 'keep-alive',
  });
  res.flushHeaders();
  res.write('retry: 2000\n\n');
  if (first !== null && BigInt(first) > BigInt(cursor) + 1n) {
    // The events after the client's position were already deleted by retention.
    await write(res, undefined, `event: gap\ndata: ${JSON.stringify({ after: cursor, first_available: first })}\n\n`);
  }

  const ended = new AbortController();
  const end = () => ended.abort();
  req.on('close', end);
  deps.closing.addEventListener('abort', end);
  const wakeup = new Wakeup();
  const unsubscribe = deps.events.subscribe(() => wakeup.notify());
  ended.signal.addEventListener('abort', () => wakeup.notify());
  log(deps.log, stream, 'stream:opened', cursor);
  try {
    while (!ended.signal.aborted) {
      const events = await readExecutionEvents(deps.pool, cursor, stream.filter, batchSize);
      for (const event of events) {
        await write(res, ended.signal, `id: ${event.position}\nevent: execution\ndata: ${JSON.stringify(toData(event))}\n\n`);
      }
      if (events.length > 0) cursor = events.at(-1)!.position;
      if (events.length === batchSize) continue;
      const before = Date.now();
      await wakeup.wait(keepAliveMs);
      if (Date.now() - before >= keepAliveMs && !ended.signal.aborted) await write(res, ended.signal, ': keep-alive\n\n');
    }
  } catch (error) {
    // Headers are out: end the stream; the client reconnects with the last id it got.
    if (!ended.signal.aborted) deps.log.warn({ event: 'stream:failed', request_id: stream.requestId, err: error, position: cursor }, 'event stream ended by an error');
  } finally {
    unsubscribe();
    req.off('close', end);
    deps.closing.removeEventListener('abort', end);
    log(deps.log, stream, 'stream:closed', cursor);
    res.end();
  }
}

async function startOfNow(deps: ApiDeps): Promise<string> {
  await sequenceExecutionEvents(deps.pool);
  return lastEventPosition(deps.pool);
}

function toData(event: ExecutionEvent) {
  return {
    position: event.position,
    execution_id: event.execution_id,
    action_ref: event.action_ref,
    status: event.status,
    previous_status: event.previous_status,
    attempt: event.attempt,
    elapsed_seconds: event.elapsed_seconds,
    at: event.at.toISOString(),
  };
}

/** Writes, waiting for the socket to drain when the client reads slowly (until the stream ends). */
async function write(res: Response, signal: AbortSignal | undefined, chunk: string): Promise<void> {
  if (res.destroyed) throw new Error('client went away');
  if (!res.write(chunk)) await once(res, 'drain', signal ? { signal } : {});
}

function log(logger: Logger, stream: StreamRequest, event: string, position: string): void {
  logger.info({ event, request_id: stream.requestId, position, filter: stream.filter }, event === 'stream:opened' ? 'event stream opened' : 'event stream closed');
}
