/**
 * Typed errors. Each carries a stable `code` (for callers and, later, HTTP status mapping), a
 * sentence that names the bad value, and the underlying `cause`.
 */
import pg from 'pg';

export type UsherErrorCode =
  | 'config_invalid'
  | 'unknown_action'
  | 'action_disabled'
  | 'invalid_params'
  | 'invalid_execution'
  | 'execution_not_found'
  | 'execution_terminal'
  | 'wait_timeout'
  | 'database_unavailable'
  | 'migration_failed'
  | 'pack_invalid';

export class UsherError extends Error {
  readonly code: UsherErrorCode;

  constructor(code: UsherErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'UsherError';
    this.code = code;
  }
}

export class ConfigError extends UsherError {
  constructor(message: string) {
    super('config_invalid', message);
    this.name = 'ConfigError';
  }
}

/** SQLSTATEs Usher reacts to by name. */
export const SqlState = {
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  objectNotInPrerequisiteState: '55000',
  invalidTextRepresentation: '22P02',
  queryCanceled: '57014',
  lockNotAvailable: '55P03',
  adminShutdown: '57P01',
  cannotConnectNow: '57P03',
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  readOnlySqlTransaction: '25006',
  tooManyConnections: '53300',
} as const;

const codeByConstraint: Record<string, UsherErrorCode> = {
  executions_action_ref_exists: 'unknown_action',
  executions_action_ref_enabled: 'action_disabled',
  executions_params_is_object: 'invalid_params',
  executions_params_size: 'invalid_params',
  executions_insert_status_is_requested: 'invalid_execution',
  executions_insert_managed_columns_unset: 'invalid_execution',
  executions_timeout_seconds_positive: 'invalid_execution',
};

/**
 * Turns a database error raised by an enqueue into an UsherError, keeping the database's own
 * sentence (it names the action or the column). Anything unrecognised is returned as is.
 */
export function toEnqueueError(error: unknown): unknown {
  if (!(error instanceof pg.DatabaseError)) return error;
  const code = error.constraint ? codeByConstraint[error.constraint] : undefined;
  if (code) return new UsherError(code, error.message, { cause: error });
  if (error.code === SqlState.notNullViolation || error.code === SqlState.invalidTextRepresentation) {
    return new UsherError('invalid_execution', error.message, { cause: error });
  }
  return error;
}

/**
 * Errors after which retrying the same statement on a fresh connection can succeed. A write
 * refused as read-only (25006) is one: during a failover the connection lands on a server that is
 * still a standby, or not yet writable, for a while. So is a server at max_connections (53300).
 */
export function isTransientDatabaseError(error: unknown): boolean {
  if (error instanceof pg.DatabaseError) {
    return [SqlState.adminShutdown, SqlState.cannotConnectNow, SqlState.deadlockDetected, SqlState.serializationFailure,
      SqlState.readOnlySqlTransaction, SqlState.tooManyConnections].includes(error.code as never) || error.code?.startsWith('08') === true;
  }
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND'].includes(code)
    || (error instanceof Error && /Connection terminated|connection timeout|Client has encountered a connection error/i.test(error.message));
}
