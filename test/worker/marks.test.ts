/**
 * How long a worker keeps retrying a mark the database could not take. End to end (Postgres
 * crashing under load, an outage longer than a lease): test/chaos/postgres-crash.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import type { MarkResult } from '../../src/queue/types.ts';
import { markWithRetry } from '../../src/worker/marks.ts';

const log = createLogger('silent', { component: 'test' });
const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });

/** A mark that fails with `errors` in turn, then answers `answer`; counts its calls. */
function markFailing(errors: Error[], answer: MarkResult = 'completed') {
  const mark = { calls: 0, once: async (): Promise<MarkResult> => {
    mark.calls += 1;
    const error = errors.shift();
    if (error) throw error;
    return answer;
  } };
  return mark;
}

describe('markWithRetry', () => {
  it('keeps retrying past the first lease while renewals keep moving the point the lease may run out', async () => {
    const mark = markFailing([refused(), refused(), refused()]);
    // Each call to leaseHeldUntil is one renewal later: 300 ms ahead, though the retries take longer than that in all.
    const started = performance.now();
    const status = await markWithRetry(() => performance.now() + 300, mark.once, () => log);
    expect(status).toBe('completed');
    expect(mark.calls).toBe(4);
    expect(performance.now() - started).toBeGreaterThan(300);
  });

  it('gives the mark up, without throwing, once the lease may have run out', async () => {
    const mark = markFailing([refused(), refused(), refused(), refused(), refused(), refused()]);
    const heldUntil = performance.now() + 400;
    expect(await markWithRetry(() => heldUntil, mark.once, () => log)).toBe('lease_expired');
    // The backoff never sleeps past the deadline: one more try at it, then no more.
    expect(mark.calls).toBeGreaterThanOrEqual(2);
    expect(mark.calls).toBeLessThan(6);
    expect(performance.now()).toBeGreaterThanOrEqual(heldUntil);
  });

  it('throws an error retrying cannot fix, and reports data the database refused as unstorable', async () => {
    const missing = Object.assign(new Error('function usher.complete_and_claim does not exist'), { code: '42883' });
    await expect(markWithRetry(() => performance.now() + 60_000, markFailing([missing]).once, () => log)).rejects.toBe(missing);
    const unstorable = Object.assign(new Error('unsupported Unicode escape sequence'), { code: '22P05' });
    expect(await markWithRetry(() => performance.now() + 60_000, markFailing([unstorable]).once, () => log)).toBe('unstorable');
  });
});
