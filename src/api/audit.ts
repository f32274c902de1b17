/**
 * Admin routes leave a row in usher.api_audit_log before they run, and its status once answered.
 * If the row cannot be written the operation does not run (the request fails like any other
 * database error), so nothing changes through the API without a trace.
 */
import type { Response } from 'express';
import type pg from 'pg';
import type { Logger } from '../log.ts';
import { recordAdminAnswer, recordAdminRequest } from '../queue/audit.ts';
import type { Caller } from './auth.ts';

export interface AuditedRequest {
  readonly caller: Caller;
  readonly operation: string;
  readonly method: string;
  readonly path: string;
  readonly params: Record<string, unknown> | undefined;
  readonly body: Record<string, unknown> | undefined;
  readonly requestId: string;
}

/** What an operation names: the action, policy or schedule in the path, else the lane or policy in the body. */
function targetOf(request: AuditedRequest): string | null {
  const named = request.params?.ref ?? request.body?.lane_key ?? request.body?.ref;
  return typeof named === 'string' ? named : null;
}

export async function auditAdminRequest(pool: pg.Pool, log: Logger, request: AuditedRequest, res: Response): Promise<void> {
  const id = await recordAdminRequest(pool, {
    actor: request.caller.actor,
    operation: request.operation,
    method: request.method,
    path: request.path,
    target: targetOf(request),
    request: { params: request.params ?? {}, body: request.body ?? {} },
    requestId: request.requestId,
  });
  res.once('finish', () => {
    recordAdminAnswer(pool, id, res.statusCode).catch((error: unknown) => {
      log.warn({ event: 'api:audit_answer_failed', err: error, audit_id: id, request_id: request.requestId, status: res.statusCode },
        'could not record the answer of an audited admin operation');
    });
  });
}
