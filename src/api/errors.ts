/**
 * Errors of the HTTP API. Every failure leaves as
 *   { "error": { "code": "...", "message": "...", "request_id": "...", "details"?: [...] } }
 * with a stable `code` and a sentence written here: a raw Postgres message or a stack trace never
 * reaches a client. `httpStatus` is the one table from code to HTTP status.
 */
import pg from 'pg';
import { z } from 'zod';
import { isTransientDatabaseError, SqlState, UsherError } from '../errors.ts';

export const httpStatus = {
  invalid_request: 400,
  invalid_json: 400,
  invalid_params: 400,
  invalid_execution: 400,
  invalid_action: 400,
  invalid_policy: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  unknown_action: 404,
  execution_not_found: 404,
  policy_not_found: 404,
  schedule_not_found: 404,
  lane_not_found: 404,
  method_not_allowed: 405,
  action_disabled: 409,
  action_busy: 409,
  execution_terminal: 409,
  execution_not_retryable: 409,
  policy_exists: 409,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal_error: 500,
  database_unavailable: 503,
  overloaded: 503,
  not_ready: 503,
} as const;

export type ApiErrorCode = keyof typeof httpStatus;
export const apiErrorCodes = Object.keys(httpStatus) as ApiErrorCode[];

/** One problem with one input field: where it was (path, query, body), its dotted name, and what was wrong. */
export interface FieldProblem {
  readonly location: 'path' | 'query' | 'body' | 'header';
  readonly field: string;
  readonly message: string;
}

export class ApiError extends Error {
  readonly code: ApiErrorCode;
  readonly status: number;
  readonly details: readonly FieldProblem[] | undefined;
  /** Extra response headers (WWW-Authenticate, Allow). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ApiErrorCode, message: string, options: { details?: FieldProblem[]; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'ApiError';
    this.code = code;
    this.status = httpStatus[code];
    this.details = options.details;
    this.headers = options.headers ?? {};
  }
}

export const errorBodySchema = z.object({
  error: z.object({
    code: z.enum(apiErrorCodes as [ApiErrorCode, ...ApiErrorCode[]]).describe('Stable machine-readable code; the HTTP status follows from it.'),
    message: z.string().describe('What went wrong, for people.'),
    request_id: z.string().describe('Id of the request, also in the X-Request-Id header and in the server log.'),
    details: z.array(z.object({
      location: z.enum(['path', 'query', 'body', 'header']),
      field: z.string().describe('Dotted path of the field, e.g. scope.pack_ref or quotas.0.limit.'),
      message: z.string(),
    })).optional().describe('Validation errors: one entry per bad field.'),
  }),
}).meta({ id: 'Error' });

export type ErrorBody = z.output<typeof errorBodySchema>;

/** Turns zod issues into a 400 that names each bad field and what was wrong with it. */
export function validationError(location: FieldProblem['location'], issues: readonly z.core.$ZodIssue[]): ApiError {
  const details: FieldProblem[] = issues.flatMap((issue) => {
    const base = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ location, field: [...base, key].join('.'), message: 'unknown field' }));
    }
    const field = base.length > 0 ? base.join('.') : `(${location})`;
    return [{ location, field, message: issue.message }];
  });
  const first = details[0]!;
  const what = { body: 'body field', query: 'query parameter', path: 'path parameter', header: 'header' }[location];
  const message = first.field === '(body)'
    ? `invalid request body: ${first.message}`
    : `invalid ${what} ${first.field}: ${first.message}`;
  return new ApiError('invalid_request', details.length > 1 ? `${message} (and ${details.length - 1} more)` : message, { details });
}

/** Errors raised by express and body-parser before a route runs: they carry `status` and often `type`. */
function fromHttpLayer(error: { status?: unknown; type?: unknown }): ApiError | undefined {
  if (typeof error.status !== 'number' || error.status < 400 || error.status >= 500) return undefined;
  switch (error.type) {
    case 'entity.too.large':
      return new ApiError('payload_too_large', 'request body is larger than the limit');
    case 'entity.parse.failed':
      return new ApiError('invalid_json', 'request body is not valid JSON (it must be a JSON object)');
    case 'charset.unsupported':
    case 'encoding.unsupported':
      return new ApiError('unsupported_media_type', 'request body must be UTF-8 JSON without an unsupported content encoding');
    default:
      return new ApiError('invalid_request', error.status === 400 ? 'malformed request' : `request refused (${error.status})`);
  }
}

/**
 * Database errors the API can meet: constraint violations that validation did not catch first
 * become 4xx with the constraint's name (names read well in a sentence, and never leak data);
 * connection trouble becomes 503; everything else is an internal error.
 */
function fromDatabase(error: pg.DatabaseError): ApiError {
  const constraint = error.constraint ? ` (constraint ${error.constraint})` : '';
  const subject = error.table === 'policies' || error.constraint?.startsWith('policies_') ? 'policy'
    : error.table === 'actions' || error.constraint?.startsWith('actions_') ? 'action' : 'execution';
  const invalid = subject === 'policy' ? 'invalid_policy' : subject === 'action' ? 'invalid_action' : 'invalid_execution';
  switch (error.code) {
    case SqlState.foreignKeyViolation:
      return new ApiError('unknown_action', `the ${subject} names an action that does not exist${constraint}`, { cause: error });
    case SqlState.checkViolation:
    case SqlState.notNullViolation:
      return new ApiError(invalid, `the ${subject} was refused by the database${constraint}`, { cause: error });
    case '23505':
      return new ApiError('conflict', `the ${subject} conflicts with an existing one${constraint}`, { cause: error });
    case SqlState.invalidTextRepresentation:
    case '22003': // numeric_value_out_of_range
    case '22007': // invalid_datetime_format
    case '22008': // datetime_field_overflow
      return new ApiError('invalid_request', 'a value is out of range or malformed', { cause: error });
    case SqlState.queryCanceled:
      return new ApiError('database_unavailable', 'the database did not answer in time', { cause: error });
    default:
      return isTransientDatabaseError(error)
        ? new ApiError('database_unavailable', 'the database is unavailable', { cause: error })
        : new ApiError('internal_error', 'internal error', { cause: error });
  }
}

const usherCodes: Partial<Record<UsherError['code'], { code: ApiErrorCode; message: string }>> = {
  unknown_action: { code: 'unknown_action', message: 'the action does not exist' },
  action_disabled: { code: 'action_disabled', message: 'the action is disabled' },
  invalid_params: { code: 'invalid_params', message: 'parameters must be a JSON object' },
  invalid_execution: { code: 'invalid_execution', message: 'the execution was refused' },
  execution_not_found: { code: 'execution_not_found', message: 'no such execution' },
  database_unavailable: { code: 'database_unavailable', message: 'the database is unavailable' },
};

/** Any thrown value as an ApiError; 5xx ones keep the original as cause, for the log only. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof UsherError) {
    const known = usherCodes[error.code];
    return known ? new ApiError(known.code, known.message, { cause: error }) : new ApiError('internal_error', 'internal error', { cause: error });
  }
  if (error instanceof pg.DatabaseError) return fromDatabase(error);
  if (isTransientDatabaseError(error) || (error instanceof Error && /timeout exceeded when trying to connect/i.test(error.message))) {
    return new ApiError('database_unavailable', 'the database is unavailable', { cause: error });
  }
  if (error && typeof error === 'object') {
    const http = fromHttpLayer(error as { status?: unknown; type?: unknown });
    if (http) return http;
  }
  return new ApiError('internal_error', 'internal error', { cause: error });
}
