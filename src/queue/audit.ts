/** The HTTP API's audit log of admin operations (usher.api_audit_log). */
import type { Queryable } from '../db/pool.ts';

export interface AdminRequest {
  readonly actor: string;
  readonly operation: string;
  readonly method: string;
  readonly path: string;
  readonly target: string | null;
  readonly request: unknown;
  readonly requestId: string;
}

/** Written before the operation runs; returns the row's id. */
export async function recordAdminRequest(db: Queryable, entry: AdminRequest): Promise<string> {
  const { rows } = await db.query<{ id: string }>(
    `insert into usher.api_audit_log (actor, operation, method, path, target, request, request_id)
     values ($1, $2, $3, $4, $5, $6, $7) returning id`,
    [entry.actor, entry.operation, entry.method, entry.path, entry.target, JSON.stringify(entry.request ?? {}), entry.requestId],
  );
  return rows[0]!.id;
}

export async function recordAdminAnswer(db: Queryable, id: string, status: number): Promise<void> {
  await db.query('update usher.api_audit_log set status = $2, answered_at = clock_timestamp() where id = $1', [id, status]);
}
