/**
 * Writing a handler's outcome: which SQL function each outcome is, and retrying a mark that met a
 * transient database failure. Completions go in batches (completions.ts); everything else one at a time.
 */
import { backoffMs, delay } from '../backoff.ts';
import type { Queryable } from '../db/pool.ts';
import { isTransientDatabaseError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { ClaimedExecution, MarkResult } from '../queue/types.ts';
import * as calls from '../queue/worker-calls.ts';
import type { Outcome } from './runner.ts';

export function markOutcome(db: Queryable, claim: ClaimedExecution, outcome: Outcome): Promise<MarkResult> {
  switch (outcome.kind) {
    case 'completed':
      return calls.completeExecution(db, claim, outcome.resultJson);
    case 'failed':
      return calls.failExecution(db, claim, outcome.error, outcome.resultJson, outcome.retryable);
    case 'postponed':
      return calls.postponeExecution(db, claim, outcome.until, outcome.reason);
    case 'timeout':
      return calls.timeOutExecution(db, claim, outcome.error);
    case 'aborted':
      return outcome.cause === 'cancel'
        ? calls.failExecution(db, claim, 'aborted by cancel', null, false)
        : calls.handBackExecution(db, claim);
  }
}

/**
 * Retries transient failures for up to one lease; past that the lease is gone anyway. 'unstorable'
 * when the database refused the data itself (class 22: a result jsonb cannot hold).
 */
export async function markWithRetry(leaseSeconds: number, markOnce: () => Promise<MarkResult>, log: () => Logger): Promise<MarkResult | 'unstorable'> {
  const deadline = Date.now() + leaseSeconds * 1000;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await markOnce();
    } catch (error) {
      if (!isTransientDatabaseError(error)) {
        if ((error as { code?: string }).code?.startsWith('22')) return 'unstorable';
        throw error;
      }
      if (Date.now() > deadline) throw error;
      log().warn({ event: 'execution:mark_retrying', err: error, attempt }, 'mark failed; retrying');
      await delay(backoffMs(attempt));
    }
  }
}
