/**
 * The execution event log (migrations/0004, sql/085): status changes under gap-free positions.
 * Readers keep the last position they saw and read on from it; sequencing moves committed changes
 * from the inbox into the log first, so a position once read is never followed by an earlier one.
 */
import type { Queryable } from '../db/pool.ts';
import type { ExecutionStatus } from '../db/schema.ts';

export interface ExecutionEvent {
  /** Position in the log, as a decimal string (bigint). */
  readonly position: string;
  readonly execution_id: string;
  readonly action_ref: string;
  readonly status: ExecutionStatus;
  readonly previous_status: ExecutionStatus | null;
  readonly attempt: number;
  readonly elapsed_seconds: number | null;
  readonly at: Date;
}

export interface EventFilter {
  /** Only events of this action. */
  readonly action_ref?: string;
  /** Only events of actions of this pack. */
  readonly pack_ref?: string;
  /** Only events of actions of these packs (a token limited to packs). */
  readonly within_packs?: readonly string[];
}

/** Gives positions to committed changes; the last position, or null when another caller is at it. */
export async function sequenceExecutionEvents(db: Queryable): Promise<string | null> {
  const result = await db.query<{ last: string | null }>('select usher.sequence_execution_events() as last');
  return result.rows[0]?.last ?? null;
}

/** The newest position given out (0 before the first event). */
export async function lastEventPosition(db: Queryable): Promise<string> {
  const result = await db.query<{ last: string }>('select last_position as last from usher.execution_event_sequencer');
  return result.rows[0]?.last ?? '0';
}

/** The oldest position still kept, or null when the log is empty. */
export async function firstEventPosition(db: Queryable): Promise<string | null> {
  const result = await db.query<{ first: string | null }>('select min(position) as first from usher.execution_events');
  return result.rows[0]?.first ?? null;
}

/** Events after `after`, in position order. */
export async function readExecutionEvents(db: Queryable, after: string, filter: EventFilter, limit: number): Promise<ExecutionEvent[]> {
  const result = await db.query<ExecutionEvent>(
    `select e.position, e.execution_id::text as execution_id, e.action_ref, e.status, e.previous_status, e.attempt,
       e.elapsed_seconds, e.at
     from usher.execution_events e
     where e.position > $1::bigint
       and ($2::text is null or e.action_ref = $2)
       and ($3::text is null or e.action_ref in (select a.ref from usher.actions a where a.pack_ref = $3))
       and ($5::text[] is null or split_part(e.action_ref, '.', 1) = any($5::text[]))
     order by e.position
     limit $4`,
    [after, filter.action_ref ?? null, filter.pack_ref ?? null, limit, filter.within_packs ?? null],
  );
  return result.rows;
}
