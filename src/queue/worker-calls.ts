/**
 * The worker's side of the queue: each function is one SQL function call, one round trip, and
 * every mark presents the lease token it was given at claim time.
 */
import type pg from 'pg';
import type { Queryable } from '../db/pool.ts';
import type { ClaimedExecution, MarkResult } from './types.ts';

/**
 * The worker's calls on the data path are prepared once per connection and then only bound and
 * run: parsing and planning the call every time took 6–8 % of a threshold-1 lane's step
 * (`bench/step-loop.ts serial --against-unnamed`).
 */
function prepared(name: string, text: string, values: unknown[]): pg.QueryConfig {
  return { name: `usher.${name}`, text, values };
}

export interface ActionRegistration {
  readonly ref: string;
  readonly description?: string;
  readonly timeout_seconds?: number;
}

export async function registerWorker(
  db: Queryable,
  worker: { name: string; host: string; pid: number; actions: readonly ActionRegistration[]; concurrency: number },
): Promise<string> {
  const result = await db.query<{ id: string }>(
    'select usher.register_worker($1, $2, $3, $4::jsonb, $5) as id',
    [worker.name, worker.host, worker.pid, JSON.stringify(worker.actions), worker.concurrency],
  );
  return result.rows[0]!.id;
}

export async function stopWorker(db: Queryable, workerId: string): Promise<void> {
  await db.query('select usher.stop_worker($1)', [workerId]);
}

export interface HeldLease {
  execution_id: string;
  lease_token: string;
  status: 'running' | 'canceling';
  /** False when another transaction (the worker's own mark, a sweep) held the row: held, but not renewed this time. */
  renewed: boolean;
}

/** Renews the given leases; the answer lists those still held. */
export async function heartbeatWorker(
  db: Queryable,
  workerId: string,
  leases: readonly { id: string; lease_token: string }[],
  leaseSeconds: number,
): Promise<HeldLease[]> {
  const result = await db.query<HeldLease>(prepared('heartbeat_worker',
    `select execution_id, lease_token, status, lease_expires_at is not null as renewed
     from usher.heartbeat_worker($1, $2::bigint[], $3::uuid[], $4)`,
    [workerId, leases.map((lease) => lease.id), leases.map((lease) => lease.lease_token), leaseSeconds],
  ));
  return result.rows;
}

export async function claimScheduled(
  db: Queryable,
  workerId: string,
  actionRefs: readonly string[],
  limit: number,
  leaseSeconds: number,
): Promise<ClaimedExecution[]> {
  const result = await db.query<ClaimedExecution>(prepared('claim_scheduled',
    `select id, action_ref, params, attempt, lease_token, timeout_seconds
     from usher.claim_scheduled($1, $2::text[], $3, $4)`,
    [workerId, actionRefs, limit, leaseSeconds],
  ));
  return result.rows.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
}

async function mark(db: Queryable, name: string, sql: string, values: unknown[]): Promise<MarkResult> {
  const result = await db.query<{ status: MarkResult }>(prepared(name, sql, values));
  return result.rows[0]?.status ?? null;
}

export function completeExecution(db: Queryable, claim: ClaimedExecution, resultJson: string): Promise<MarkResult> {
  return mark(db, 'complete_execution', 'select usher.complete_execution($1, $2, $3::jsonb) as status', [claim.id, claim.lease_token, resultJson]);
}

export function failExecution(
  db: Queryable,
  claim: ClaimedExecution,
  error: string,
  resultJson: string | null,
  retryable = true,
): Promise<MarkResult> {
  return mark(db, 'fail_execution', 'select usher.fail_execution($1, $2, $3, $4::jsonb, $5) as status', [claim.id, claim.lease_token, error, resultJson, retryable]);
}

/** Back to the head of its lane with no attempt charged; the lane pauses until `until`. */
export function postponeExecution(db: Queryable, claim: ClaimedExecution, until: Date, reason: string | undefined): Promise<MarkResult> {
  return mark(db, 'postpone_execution', 'select usher.postpone_execution($1, $2, $3, $4) as status', [claim.id, claim.lease_token, until, reason ?? null]);
}

export function timeOutExecution(db: Queryable, claim: ClaimedExecution, error: string): Promise<MarkResult> {
  return mark(db, 'time_out_execution', 'select usher.time_out_execution($1, $2, $3) as status', [claim.id, claim.lease_token, error]);
}

export function handBackExecution(db: Queryable, claim: ClaimedExecution): Promise<MarkResult> {
  return mark(db, 'hand_back_execution', 'select usher.hand_back_execution($1, $2) as status', [claim.id, claim.lease_token]);
}

export interface Completion {
  readonly claim: ClaimedExecution;
  readonly resultJson: string;
}

/**
 * Completes a batch of executions and, in the same transaction, claims up to `limit` admitted
 * executions for the worker slots they free (often the next ones of the same lanes, admitted by
 * these completions). `statuses` follows the order of `completions`; null means the lease was lost.
 */
export async function completeAndClaim(
  db: Queryable,
  completions: readonly Completion[],
  next: { workerId: string; actionRefs: readonly string[]; limit: number; leaseSeconds: number },
): Promise<{ statuses: MarkResult[]; claims: ClaimedExecution[] }> {
  const result = await db.query<ClaimedExecution & { kind: 'marked' | 'claimed'; status: MarkResult }>(prepared('complete_and_claim',
    `select kind, id, status, action_ref, params, attempt, lease_token, timeout_seconds
     from usher.complete_and_claim($1::bigint[], $2::uuid[], $3::jsonb[], $4, $5::text[], $6, $7)`,
    [
      completions.map(({ claim }) => claim.id),
      completions.map(({ claim }) => claim.lease_token),
      completions.map(({ resultJson }) => resultJson),
      next.workerId, next.actionRefs, next.limit, next.leaseSeconds,
    ],
  ));
  const marked = new Map<string, MarkResult>();
  const claims: ClaimedExecution[] = [];
  for (const { kind, status, ...row } of result.rows) {
    if (kind === 'marked') marked.set(row.id, status);
    else claims.push(row);
  }
  claims.sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
  return { statuses: completions.map(({ claim }) => marked.get(claim.id) ?? null), claims };
}
