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
}

/** Enqueues one execution; `db` may be a pool or a client inside the caller's transaction. */
export async function enqueue(db: Queryable, input: EnqueueInput): Promise<Execution> {
  const [execution] = await enqueueMany(db, [input]);
  return execution as Execution;
}

/** Enqueues several executions in one statement; ids follow the order of `inputs`. */
export async function enqueueMany(db: Queryable, inputs: readonly EnqueueInput[]): Promise<Execution[]> {
  if (inputs.length === 0) return [];
  const rows = inputs.map((input) => ({
    action_ref: input.action_ref,
    params: input.params ?? {},
    timeout_seconds: input.timeout_seconds ?? null,
    parent_id: input.parent_id ?? null,
    enforcement_id: input.enforcement_id ?? null,
  }));
  try {
    const result = await db.query<Execution>(
      `insert into usher.executions (action_ref, params, timeout_seconds, parent_id, enforcement_id)
       select r.item ->> 'action_ref', r.item -> 'params', (r.item ->> 'timeout_seconds')::integer,
         (r.item ->> 'parent_id')::bigint, (r.item ->> 'enforcement_id')::bigint
       from jsonb_array_elements($1::jsonb) with ordinality as r (item, ord)
       order by r.ord
       returning *`,
      [JSON.stringify(rows)],
    );
    return result.rows.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  } catch (error) {
    throw toEnqueueError(error);
  }
}
