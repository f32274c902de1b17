/**
 * Enqueue from TypeScript. It is the same INSERT a psql user would write, so it joins the
 * caller's transaction when given their client: nothing is queued if they roll back.
 */
import type { Queryable } from '../db/pool.ts';
import { toEnqueueError } from '../errors.ts';
import type { Execution } from './types.ts';

export interface EnqueueInput {
  readonly action_ref: string;
  readonly params?: Record<string, unknown>;
  /** Overrides the action's timeout_seconds for this execution. */
  readonly timeout_seconds?: number;
  readonly parent_id?: string;
  readonly enforcement_id?: string;
  /** Not before this time: the execution joins its lane (and takes its place there) only then. */
  readonly run_at?: Date | string;
  /** Overrides the action's max_retries for this execution. */
  readonly max_retries?: number;
  /** While an execution of the same action with this key is not terminal, enqueue returns that one instead. */
  readonly idempotency_key?: string;
}

/** Enqueues one execution; `db` may be a pool or a client inside the caller's transaction. */
export async function enqueue(db: Queryable, input: EnqueueInput): Promise<Execution> {
  const [execution] = await enqueueMany(db, [input]);
  return execution as Execution;
}

/**
 * Enqueues several executions in one statement; the answer follows the order of `inputs`. An input
 * whose idempotency_key matches an execution of its action that has not ended gets that execution.
 */
export async function enqueueMany(db: Queryable, inputs: readonly EnqueueInput[]): Promise<Execution[]> {
  return (await enqueueReportingExisting(db, inputs)).map((entry) => entry.execution);
}

/** As enqueueMany, telling for each input whether it got an existing execution (same idempotency key). */
export async function enqueueReportingExisting(
  db: Queryable,
  inputs: readonly EnqueueInput[],
): Promise<{ execution: Execution; existing: boolean }[]> {
  if (inputs.length === 0) return [];
  const rows = inputs.map((input) => ({
    action_ref: input.action_ref,
    params: input.params ?? {},
    timeout_seconds: input.timeout_seconds ?? null,
    parent_id: input.parent_id ?? null,
    enforcement_id: input.enforcement_id ?? null,
    run_at: input.run_at instanceof Date ? input.run_at.toISOString() : input.run_at ?? null,
    max_retries: input.max_retries ?? null,
    idempotency_key: input.idempotency_key ?? null,
  }));
  let inserted: Execution[];
  try {
    const result = await db.query<Execution>(
      `insert into usher.executions
         (action_ref, params, timeout_seconds, parent_id, enforcement_id, run_at, max_retries, idempotency_key)
       select r.item ->> 'action_ref', r.item -> 'params', (r.item ->> 'timeout_seconds')::integer,
         (r.item ->> 'parent_id')::bigint, (r.item ->> 'enforcement_id')::bigint, (r.item ->> 'run_at')::timestamptz,
         (r.item ->> 'max_retries')::integer, r.item ->> 'idempotency_key'
       from jsonb_array_elements($1::jsonb) with ordinality as r (item, ord)
       order by r.ord
       on conflict (action_ref, idempotency_key) where idempotency_key is not null and completed_at is null do nothing
       returning *`,
      [JSON.stringify(rows)],
    );
    inserted = result.rows.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  } catch (error) {
    throw toEnqueueError(error);
  }
  // Inserted rows keep the order of their inputs; an input that was skipped met an existing key.
  const answer: ({ execution: Execution; existing: boolean } | undefined)[] = [];
  const skipped: number[] = [];
  let next = 0;
  for (const [index, input] of inputs.entries()) {
    const row = inserted[next];
    if (row && row.action_ref === input.action_ref && row.idempotency_key === (input.idempotency_key ?? null)) {
      answer.push({ execution: row, existing: false });
      next += 1;
    } else {
      answer.push(undefined);
      skipped.push(index);
    }
  }
  if (skipped.length > 0) {
    const holders = await keyHolders(db, skipped.map((index) => inputs[index]!));
    // A holder that ended between the insert and this read frees its key: those inputs are enqueued again.
    const holderOf = (index: number) => holders.get(holdingKey(inputs[index]!.action_ref, inputs[index]!.idempotency_key));
    const freed = skipped.filter((index) => !holderOf(index));
    const again = freed.length > 0 ? await enqueueReportingExisting(db, freed.map((index) => inputs[index]!)) : [];
    for (const index of skipped) {
      const holder = holderOf(index);
      answer[index] = holder ? { execution: holder, existing: true } : again[freed.indexOf(index)];
    }
  }
  return answer as { execution: Execution; existing: boolean }[];
}

/** An action and an idempotency key, as one Map key. */
const holdingKey = (actionRef: string, idempotencyKey: string | null | undefined): string => JSON.stringify([actionRef, idempotencyKey ?? null]);

/** The executions that hold these inputs' idempotency keys (not ended), by holdingKey; one read for the lot. */
async function keyHolders(db: Queryable, inputs: readonly EnqueueInput[]): Promise<Map<string, Execution>> {
  const { rows } = await db.query<Execution>(
    `select e.* from usher.executions e
     join unnest($1::text[], $2::text[]) as k (action_ref, idempotency_key)
       on e.action_ref = k.action_ref and e.idempotency_key = k.idempotency_key
     where e.completed_at is null`,
    [inputs.map((input) => input.action_ref), inputs.map((input) => input.idempotency_key)],
  );
  return new Map(rows.map((row) => [holdingKey(row.action_ref, row.idempotency_key), row]));
}
