/**
 * Hostile handlers beyond those in test/integration/worker-behaviour.test.ts (non-Error throws,
 * cycles, BigInt, NUL): megabytes of result, megabytes written to stdout and the log, params nested
 * thousands deep. Each ends cleanly with a clear outcome, and the worker carries on.
 */
import { expect, it } from 'vitest';
import { killAll } from '../support/processes.ts';
import { events, workerIdOf } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';
import { startChaosWorker, useChaosDatabase } from './support.ts';

const chaos = useChaosDatabase(`insert into usher.actions (ref, max_retries) values ('c.big', 3), ('c.noisy', 0), ('c.work', 0)`);

async function enqueue(action: string, params: unknown): Promise<string> {
  const { rows } = await chaos.t.pool.query<{ id: string }>(`insert into usher.executions (action_ref, params) values ($1, $2) returning id`, [action, params]);
  return rows[0]!.id;
}

function ended(id: string) {
  return waitFor(async () => (await chaos.t.pool.query(
    `select status, attempt, error, result, octet_length(result::text) as result_bytes from usher.executions where id = $1 and completed_at is not null`,
    [id])).rows[0], { what: `execution ${id} to end`, timeoutMs: 30_000 });
}

it('fails an 8 MB result with the size in the error and no retry, stores 0.5 MB, survives 5 MB of output and 2,000-deep params', async () => {
  const worker = await startChaosWorker(chaos.t.url, { concurrency: 1, name: 'hostile' });
  const huge = await enqueue('c.big', { mb: 8 });
  const fine = await enqueue('c.big', { mb: 0.5 });
  const noisy = await enqueue('c.noisy', { mb: 5 });
  const deepParams = JSON.parse(`{"lane": "deep", "n": 7, "nest": ${'['.repeat(2000)}${']'.repeat(2000)}}`);
  const deep = await enqueue('c.work', deepParams);

  expect(await ended(huge)).toEqual({
    status: 'failed',
    attempt: 1,
    error: 'ResultNotStorable: the handler\'s return value is 8388619 bytes of JSON, over the limit of 1048576 bytes',
    result: { error: { name: 'ResultNotStorable', message: 'the handler\'s return value is 8388619 bytes of JSON, over the limit of 1048576 bytes' } },
    result_bytes: expect.any(Number),
  });
  expect(await ended(fine)).toMatchObject({ status: 'completed', attempt: 1, error: null, result_bytes: 524300 });
  expect(await ended(noisy)).toMatchObject({ status: 'completed', result: { lines: 80 } });
  expect(await ended(deep)).toMatchObject({ status: 'completed', result: { n: 7, attempt: 1 } });

  const after = await enqueue('c.work', { n: 'after' });
  expect(await ended(after)).toMatchObject({ status: 'completed', result: { n: 'after', pid: worker.child.pid } });
  expect(worker.child.exitCode).toBeNull();
  expect(events(worker, 'worker:mark_impossible')).toEqual([]);
  // All 5 MB came through: 40 lines on stdout and 40 log records of 64 kB each.
  await waitFor(() => (worker.lines.join('').match(/y/g)?.length ?? 0) >= 80 * 64 * 1024, { what: '5 MB of output read', timeoutMs: 20_000 });
  expect((await chaos.t.pool.query(`select count(*)::int as n from usher.executions where worker_id = $1`, [workerIdOf(worker)])).rows).toEqual([{ n: 5 }]);
});
