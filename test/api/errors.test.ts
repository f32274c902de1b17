import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpStatus, toApiError } from '../../src/api/errors.ts';
import { UsherError } from '../../src/errors.ts';
import { READ_TOKEN, snapshot, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`insert into usher.actions (ref) values ('demo.a')`);
});
afterAll(() => api.close());

const envelope = (code: string, message: string) => ({ error: { code, message, request_id: expect.any(String) } });

describe('the error envelope', () => {
  it('answers unknown routes with 404 in the envelope, and other methods of a known path with 405 and Allow', async () => {
    expect((await api.request('GET', '/nope')).body).toEqual(envelope('not_found', 'no route GET /api/v1/nope'));
    const outside = await fetch(`${api.server.url}/api/v2/executions`);
    expect([outside.status, (await outside.json()).error.code]).toEqual([404, 'not_found']);
    const wrong = await api.request('DELETE', '/executions');
    expect([wrong.status, wrong.headers.get('allow'), wrong.body]).toEqual([405, 'GET, HEAD', envelope('method_not_allowed', 'DELETE is not allowed on /api/v1/executions; use GET, HEAD')]);
    const execute = await api.request('GET', '/executions/execute');
    expect([execute.status, execute.headers.get('allow')]).toEqual([405, 'POST']);
  });

  it('refuses bodies over 1 MiB with 413, bodies that are not JSON with 415, and broken JSON with 400', async () => {
    const before = await snapshot(api.t.pool);
    const huge = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.a', parameters: { blob: 'x'.repeat(1024 * 1024) } } });
    expect([huge.status, huge.body]).toEqual([413, envelope('payload_too_large', 'request body is larger than the limit')]);
    const text = await api.request('POST', '/executions/execute', { rawBody: 'action_ref=demo.a', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect([text.status, text.body]).toEqual([415, envelope('unsupported_media_type', 'request body must be JSON, sent with Content-Type: application/json')]);
    const untyped = await api.request('POST', '/executions/execute', { rawBody: '{"action_ref": "demo.a", "parameters": {}}', headers: { 'content-type': '' } });
    expect(untyped.status).toBe(415);
    for (const raw of ['{"action_ref": ', 'null', '"text"', '12']) {
      const broken = await api.request('POST', '/executions/execute', { rawBody: raw, headers: { 'content-type': 'application/json' } });
      expect([raw, broken.status, broken.body]).toEqual([raw, 400, envelope('invalid_json', 'request body is not valid JSON (it must be a JSON object)')]);
    }
    const array = await api.request('POST', '/executions/execute', { body: [{ action_ref: 'demo.a' }] });
    expect([array.status, array.body.error.message]).toEqual([400, 'invalid request body: Invalid input: expected object, received array']);
    const latin1 = await api.request('POST', '/executions/execute', { rawBody: '{}', headers: { 'content-type': 'application/json; charset=latin1' } });
    expect([latin1.status, latin1.body.error.code]).toEqual([415, 'unsupported_media_type']);
    const badUrl = await api.request('GET', '/executions/%zz');
    expect([badUrl.status, badUrl.body]).toEqual([400, envelope('invalid_request', 'malformed request')]);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('gives every response a request id: the caller\'s when it is safe, a new one otherwise', async () => {
    const given = await api.request('GET', '/nope', { headers: { 'x-request-id': 'trace-123.abc' } });
    expect([given.headers.get('x-request-id'), given.body.error.request_id]).toEqual(['trace-123.abc', 'trace-123.abc']);
    const unsafe = await api.request('GET', '/nope', { headers: { 'x-request-id': `bad id ${'x'.repeat(80)}` } });
    expect(unsafe.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    const ok = await api.request('GET', '/health', { token: null });
    expect(ok.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('logs one http:request line per request, with route, status and error code, and never a token', async () => {
    await api.request('GET', '/actions/demo.zzz', { token: READ_TOKEN, headers: { 'x-request-id': 'log-check-1' } });
    const line = api.logs.find((entry) => entry.request_id === 'log-check-1');
    expect(line).toMatchObject({
      event: 'http:request', level: 'info', method: 'GET', path: '/api/v1/actions/demo.zzz', route: 'GET /actions/{ref}', status: 404,
      error_code: 'unknown_action', duration_ms: expect.any(Number),
    });
    const all = JSON.stringify(api.logs);
    expect(all).not.toContain(READ_TOKEN);
    expect(all).not.toContain(WRITE_TOKEN);
  });
});

describe('unknown failures', () => {
  let broken: TestDatabase;
  let brokenApi: TestApi;
  beforeAll(async () => {
    broken = await createTestDatabase();
    await broken.pool.query('alter view usher.queue_stats rename to queue_stats_gone');
    brokenApi = await startTestApi({ database: broken });
  });
  afterAll(async () => {
    await brokenApi.close();
    await broken.drop();
  });

  it('answers 500 with a request id that the log has with the real error; the client sees no database text', async () => {
    const res = await brokenApi.request('GET', '/queue-stats');
    expect(res.status).toBe(500);
    const id = res.body.error.request_id;
    expect(res.body).toEqual({ error: { code: 'internal_error', message: `internal error; the server log has the details under request_id ${id}`, request_id: id } });
    expect(JSON.stringify(res.body)).not.toMatch(/queue_stats|relation|does not exist|at /);
    const logged = brokenApi.logs.find((entry) => entry.event === 'http:failed' && entry.request_id === id) as { err: { message: string; stack: string } };
    expect(logged).toMatchObject({ level: 'error', code: 'internal_error', path: '/api/v1/queue-stats' });
    expect(logged.err.message).toBe('relation "usher.queue_stats" does not exist');
    expect(logged.err.stack).toContain('src/queue/paging.ts');
  });
});

describe('the table from error to HTTP status', () => {
  function databaseError(code: string, constraint?: string, table?: string): pg.DatabaseError {
    const error = new pg.DatabaseError('raw postgres text with secrets', 0, 'error');
    error.code = code;
    error.constraint = constraint;
    error.table = table;
    return error;
  }

  it('maps constraint errors to 4xx naming the constraint, connection trouble to 503, and the rest to 500', () => {
    const cases: [unknown, string, number, string][] = [
      [databaseError('23514', 'policies_quotas_valid', 'policies'), 'invalid_policy', 400, 'the policy was refused by the database (constraint policies_quotas_valid)'],
      [databaseError('23503', 'policies_action_ref_fkey', 'policies'), 'unknown_action', 404, 'the policy names an action that does not exist (constraint policies_action_ref_fkey)'],
      [databaseError('23505', 'policies_ref_unique', 'policies'), 'conflict', 409, 'the policy conflicts with an existing one (constraint policies_ref_unique)'],
      [databaseError('23514', 'actions_retry_jitter_fraction', 'actions'), 'invalid_action', 400, 'the action was refused by the database (constraint actions_retry_jitter_fraction)'],
      [databaseError('22003'), 'invalid_request', 400, 'a value is out of range or malformed'],
      [databaseError('57014'), 'database_unavailable', 503, 'the database did not answer in time'],
      [databaseError('57P01'), 'database_unavailable', 503, 'the database is unavailable'],
      [databaseError('25006'), 'database_unavailable', 503, 'the database is unavailable'],
      [databaseError('53300'), 'database_unavailable', 503, 'the database is unavailable'],
      [databaseError('XX000'), 'internal_error', 500, 'internal error'],
      [new UsherError('unknown_action', 'usher.executions: unknown action \'x\''), 'unknown_action', 404, 'the action does not exist'],
      [new UsherError('action_disabled', 'raw'), 'action_disabled', 409, 'the action is disabled'],
      [new UsherError('invalid_params', 'raw'), 'invalid_params', 400, 'parameters must be a JSON object'],
      [new UsherError('migration_failed', 'raw'), 'internal_error', 500, 'internal error'],
      [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }), 'database_unavailable', 503, 'the database is unavailable'],
      [new TypeError('x is undefined'), 'internal_error', 500, 'internal error'],
    ];
    for (const [error, code, status, message] of cases) {
      const mapped = toApiError(error);
      expect([mapped.code, mapped.status, mapped.message]).toEqual([code, status, message]);
      expect(httpStatus[mapped.code]).toBe(status);
    }
  });
});
