/**
 * How the worker groups completions into batches. The database side of a batch is in
 * test/sql/complete-and-claim.test.ts; here `send` records the batches it is given.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Completion } from '../../src/queue/worker-calls.ts';
import type { MarkResult } from '../../src/queue/types.ts';
import { CompletionBatcher } from '../../src/worker/completions.ts';

function completion(id: number): Completion {
  return {
    claim: { id: String(id), action_ref: 'a.b', params: {}, attempt: 1, lease_token: `token-${id}`, timeout_seconds: 60 },
    resultJson: 'null',
  };
}

/** A send whose answers the test releases one batch at a time. */
function controlledSend() {
  const batches: string[][] = [];
  const releases: Array<(statuses: MarkResult[]) => void> = [];
  const send = (batch: readonly Completion[]) => {
    batches.push(batch.map(({ claim }) => claim.id));
    return new Promise<MarkResult[]>((resolve) => releases.push(resolve));
  };
  return { batches, releases, send };
}

const until = async (check: () => boolean) => {
  while (!check()) await new Promise((resolve) => setImmediate(resolve));
};

describe('CompletionBatcher', () => {
  it('sends the first completion at once, and those that arrive while it is on its way as the next batch', async () => {
    const { batches, releases, send } = controlledSend();
    const batcher = new CompletionBatcher(send);
    const first = batcher.complete(completion(1));
    await until(() => batches.length === 1);
    const rest = [2, 3, 4].map((id) => batcher.complete(completion(id)));
    expect(batches).toEqual([['1']]);

    releases[0]!(['completed']);
    expect(await first).toBe('completed');
    await until(() => batches.length === 2);
    expect(batches).toEqual([['1'], ['2', '3', '4']]);
    releases[1]!(['completed', null, 'completed']);
    expect(await Promise.all(rest)).toEqual(['completed', null, 'completed']);
  });

  it('puts completions of the same turn in one batch, and no more than maxBatch in any', async () => {
    const { batches, releases, send } = controlledSend();
    const batcher = new CompletionBatcher(send, 2);
    const all = [1, 2, 3, 4, 5].map((id) => batcher.complete(completion(id)));
    await until(() => batches.length === 1);
    releases[0]!(['completed', 'completed']);
    await until(() => batches.length === 2);
    releases[1]!(['completed', 'completed']);
    await until(() => batches.length === 3);
    releases[2]!(['completed']);
    expect(await Promise.all(all)).toEqual(['completed', 'completed', 'completed', 'completed', 'completed']);
    expect(batches).toEqual([['1', '2'], ['3', '4'], ['5']]);
  });

  it('after a batch the database refused, sends each member alone, so only the one at fault gets the error', async () => {
    const batches: string[][] = [];
    const refused = new pg.DatabaseError('invalid input syntax for type json', 0, 'error');
    refused.code = '22P02';
    const batcher = new CompletionBatcher(async (batch) => {
      batches.push(batch.map(({ claim }) => claim.id));
      if (batch.some(({ claim }) => claim.id === '2')) throw refused;
      return batch.map(() => 'completed' as const);
    });
    const results = await Promise.allSettled([1, 2, 3].map((id) => batcher.complete(completion(id))));
    expect(batches).toEqual([['1', '2', '3'], ['1'], ['2'], ['3']]);
    expect(results).toEqual([
      { status: 'fulfilled', value: 'completed' },
      { status: 'rejected', reason: refused },
      { status: 'fulfilled', value: 'completed' },
    ]);
  });

  it('rejects every member of a batch lost to a connection failure, for each to retry', async () => {
    const batches: string[][] = [];
    const lost = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    const batcher = new CompletionBatcher(async (batch) => {
      batches.push(batch.map(({ claim }) => claim.id));
      throw lost;
    });
    const results = await Promise.allSettled([1, 2].map((id) => batcher.complete(completion(id))));
    expect(batches).toEqual([['1', '2']]);
    expect(results).toEqual([{ status: 'rejected', reason: lost }, { status: 'rejected', reason: lost }]);
  });
});
