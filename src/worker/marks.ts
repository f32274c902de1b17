/**
 * Writing a handler's outcome: which SQL function each outcome is, and retrying a mark that met a
 * transient database failure, and logging what came of it. Completions go in batches (completions.ts);
 * everything else one at a time.
 */
import { backoffMs, delay } from '../backoff.ts';
import type { Queryable } from '../db/pool.ts';
import { isTransientDatabaseError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { ClaimedExecution, MarkResult } from '../queue/types.ts';
import * as calls from '../queue/worker-calls.ts';
import type { Completion } from '../queue/worker-calls.ts';
import { failureFromReason, type Outcome, type RunningExecution } from './runner.ts';

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
 * Retries transient failures (the database restarting, a connection cut) for as long as the lease
 * may still be held: until a lease after the last renewal sent for it, a point the worker's
 * heartbeats keep moving while the database answers them. Past it the lease may have run out and
 * the execution gone back to its lane: 'lease_expired', and the process carries on. 'unstorable'
 * when the database refused the data itself (class 22: a result jsonb cannot hold).
 */
export async function markWithRetry(
  leaseHeldUntil: () => number,
  markOnce: () => Promise<MarkResult>,
  log: () => Logger,
): Promise<MarkResult | 'unstorable' | 'lease_expired'> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await markOnce();
    } catch (error) {
      if (!isTransientDatabaseError(error)) {
        if ((error as { code?: string }).code?.startsWith('22')) return 'unstorable';
        throw error;
      }
      const left = leaseHeldUntil() - performance.now();
      if (left <= 0) {
        log().error({ event: 'execution:mark_abandoned', err: error, attempts: attempt },
          'the database did not take the mark before the lease may have run out; the execution will run again');
        return 'lease_expired';
      }
      // Every execution being marked meets the same outage: one warning each, then debug.
      log()[attempt === 1 ? 'warn' : 'debug']({ event: 'execution:mark_retrying', err: error, attempt }, 'mark failed; retrying');
      // The last try comes at the deadline, not a whole backoff past it.
      await delay(Math.min(backoffMs(attempt), left));
    }
  }
}

export interface OutcomeReport {
  readonly db: Queryable;
  readonly leaseSeconds: number;
  /** Whether info lines are logged at all: if not, a completed execution makes no child logger. */
  readonly logsInfo: boolean;
  /** Sends a completion in the worker's next batch; undefined when it must go alone (the worker is stopping). */
  readonly batchCompletion: (completion: Completion) => Promise<MarkResult> | undefined;
}

/** Marks an execution's outcome and logs it; true when the mark also claimed for the slot it frees (batched completions). */
export async function reportOutcome(report: OutcomeReport, running: RunningExecution, outcome: Outcome, log: () => Logger): Promise<boolean> {
  const { claim } = running;
  if (outcome.kind === 'aborted' && outcome.cause === 'lease_lost') {
    log().warn({ event: 'execution:lease_lost' }, 'lease lost; the outcome is not reported');
    return false;
  }
  let claimed = false;
  const leaseHeldUntil = () => running.leaseRenewalSentAt + report.leaseSeconds * 1000;
  let status = await markWithRetry(leaseHeldUntil, async () => {
    const batched = outcome.kind === 'completed' ? report.batchCompletion({ claim, resultJson: outcome.resultJson }) : undefined;
    if (!batched) return markOutcome(report.db, claim, outcome);
    const answer = await batched;
    claimed = true;
    return answer;
  }, log);
  if (status === 'unstorable') {
    const failed = failureFromReason('the result could not be stored in Postgres (jsonb rejected it)');
    status = await markWithRetry(leaseHeldUntil, () => markOutcome(report.db, claim, failed), log);
  }
  // Logged where it was decided; the executor takes the execution back when its lease runs out.
  if (status === 'lease_expired') return claimed;
  if (status === null || status === 'unstorable') {
    log().warn({ event: 'execution:mark_fenced', outcome: outcome.kind }, 'mark refused: the lease is no longer held');
  } else if (!report.logsInfo) {
    // Nothing more to log at this level, and no child logger to make for it.
  } else if (outcome.kind === 'postponed') {
    log().info({ event: 'execution:postponed', until: outcome.until.toISOString(), reason: outcome.reason }, 'lane paused; execution back at its head');
  } else if (status === 'requested' || status === 'delayed') {
    log().info({ event: 'execution:retrying', outcome: outcome.kind }, 'attempt ended; retrying after backoff');
  } else {
    log().info({ event: `execution:${status}` }, `execution ${status}`);
  }
  return claimed;
}
