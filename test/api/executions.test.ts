import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { snapshot, startTestApi, type TestApi } from '../support/api.ts';
import { claimOne, completeClaimed, executionJson, failClaimed, registerTestWorker } from '../support/queue-states.ts';

let api: TestApi;
let workerId: string;

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('demo.free'), ('demo.limited'), ('demo.off');
    update usher.actions set enabled = false where ref = 'demo.off';
    insert into usher.policies (ref, action_ref, threshold) values ('limited', 'demo.limited', 1);`);
  workerId = await registerTestWorker(api.t.pool, 'api-test', ['demo.free']);
});
afterAll(() => api.close());

const count = async () => Number((await api.t.pool.query('select count(*) from usher.executions')).rows[0].count);

/** Ends every admitted execution of demo.free but `keep`, so the next claim takes `keep`. */
async function onlyClaimable(keep: string): Promise<void> {
  await api.t.pool.query(
    `update usher.executions set status = 'cancelled', completed_at = now() where status = 'scheduled' and id <> $1`, [keep]);
}

describe('POST /executions/execute', () => {
  it('enqueues with 201 and answers the stored row, parameters in params', async () => {
    const res = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.free', parameters: { host: 'db-1', n: 1 } } });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ data: await executionJson(api.t.pool, res.body.data.id) });
    expect(res.body.data).toMatchObject({ action_ref: 'demo.free', params: { host: 'db-1', n: 1 }, status: 'scheduled', lane_key: null, attempt: 0 });
    expect(res.body.data.id).toMatch(/^[0-9]+$/);
    expect(res.body.data).not.toHaveProperty('lease_token');
  });

  it('places an execution of an action with a policy in its lane, and takes every optional field', async () => {
    const parent = (await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.free', parameters: {} } })).body.data.id;
    const res = await api.request('POST', '/executions/execute', {
      body: {
        action_ref: 'demo.limited', parameters: { ünïcode: '✓ 雪' }, timeout_seconds: 5, max_retries: 2,
        parent_id: parent, enforcement_id: '7', idempotency_key: 'k-1',
      },
    });
    expect(res.status).toBe(201);
    expect(res.body.data).toMatchObject({
      action_ref: 'demo.limited', params: { ünïcode: '✓ 雪' }, status: 'requested', lane_key: 'action:demo.limited',
      timeout_seconds: 5, max_retries: 2, parent_id: parent, enforcement_id: '7', idempotency_key: 'k-1',
    });
    expect(res.body).toEqual({ data: await executionJson(api.t.pool, res.body.data.id) });
  });

  it('answers 200 with the existing execution when the idempotency key is held, inserting nothing', async () => {
    const body = { action_ref: 'demo.limited', parameters: { n: 1 }, idempotency_key: 'same' };
    const first = await api.request('POST', '/executions/execute', { body });
    const before = await count();
    const second = await api.request('POST', '/executions/execute', { body: { ...body, parameters: { n: 2 } } });
    expect(first.status).toBe(201);
    expect(second.status).toBe(200);
    expect(second.body).toEqual({ data: first.body.data, message: 'an execution with idempotency_key "same" exists; returned it' });
    expect(await count()).toBe(before);
  });

  it('holds an execution with a future run_at as delayed', async () => {
    const res = await api.request('POST', '/executions/execute', {
      body: { action_ref: 'demo.free', parameters: {}, run_at: '2099-01-01T00:00:00+02:00' },
    });
    expect(res.status).toBe(201);
    expect(res.body.data).toMatchObject({ status: 'delayed', run_at: '2098-12-31T22:00:00.000Z', queue_position: null });
  });

  it('refuses an unknown action (404) and a disabled one (409), naming the action and storing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const unknown = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.nope', parameters: {} } });
    expect(unknown.status).toBe(404);
    expect(unknown.body).toEqual({ error: { code: 'unknown_action', message: 'unknown action demo.nope', request_id: expect.any(String) } });
    const disabled = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.off', parameters: {} } });
    expect(disabled.status).toBe(409);
    expect(disabled.body.error).toEqual({ code: 'action_disabled', message: 'action demo.off is disabled', request_id: expect.any(String) });
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('names every bad field in a 400', async () => {
    const res = await api.request('POST', '/executions/execute', {
      body: { action_ref: 'Demo Free', parameters: [1, 2], params: {}, timeout_seconds: 0 },
    });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('invalid_request');
    expect(res.body.error.message).toBe(
      'invalid body field action_ref: must be <pack>.<name>: lowercase letters, digits, _ and -, each part starting with a letter (and 3 more)');
    expect(res.body.error.details).toEqual([
      { location: 'body', field: 'action_ref', message: 'must be <pack>.<name>: lowercase letters, digits, _ and -, each part starting with a letter' },
      { location: 'body', field: 'parameters', message: 'Invalid input: expected record, received array' },
      { location: 'body', field: 'timeout_seconds', message: 'Too small: expected number to be >=1' },
      { location: 'body', field: 'params', message: 'unknown field' },
    ]);
    const missing = await api.request('POST', '/executions/execute', { body: {} });
    expect(missing.body.error.details.map((detail: { field: string }) => detail.field)).toEqual(['action_ref', 'parameters']);
  });

  it('refuses parameters nested deeper than 100 levels with a 400, however deep', async () => {
    const before = await snapshot(api.t.pool);
    for (const depth of [101, 200_000]) {
      const rawBody = `{"action_ref": "demo.free", "parameters": {"a": ${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}}}`;
      const res = await api.request('POST', '/executions/execute', { rawBody, headers: { 'content-type': 'application/json' } });
      expect([depth, res.status, res.body.error.details]).toEqual([depth, 400, [
        { location: 'body', field: 'parameters', message: 'must not nest deeper than 100 levels' },
      ]]);
    }
    expect(await snapshot(api.t.pool)).toEqual(before);
    const deepest = await api.request('POST', '/executions/execute', {
      rawBody: `{"action_ref": "demo.free", "parameters": {"a": ${'['.repeat(99)}${']'.repeat(99)}}}`, headers: { 'content-type': 'application/json' },
    });
    expect(deepest.status).toBe(201);
  });
});

describe('GET /executions/{id}', () => {
  it('answers the row, 404 for an unknown id and 400 for one that is not an id', async () => {
    const created = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.free', parameters: { x: 1 } } });
    const res = await api.request('GET', `/executions/${created.body.data.id}`);
    expect(res).toMatchObject({ status: 200, body: { data: await executionJson(api.t.pool, created.body.data.id) } });
    const missing = await api.request('GET', '/executions/999999999');
    expect(missing.status).toBe(404);
    expect(missing.body.error).toEqual({ code: 'execution_not_found', message: 'no execution with id 999999999', request_id: expect.any(String) });
    const bad = await api.request('GET', '/executions/12abc');
    expect(bad.status).toBe(400);
    expect(bad.body.error.details).toEqual([{ location: 'path', field: 'id', message: 'must be a positive whole number (as a string)' }]);
  });
});

describe('POST /executions/{id}/cancel', () => {
  it('cancels a waiting execution at once, with the reason given', async () => {
    const created = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.limited', parameters: { c: 1 } } });
    const res = await api.request('POST', `/executions/${created.body.data.id}/cancel`, { body: { reason: 'not needed' } });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ data: await executionJson(api.t.pool, created.body.data.id), message: 'execution cancelled' });
    expect(res.body.data).toMatchObject({ status: 'cancelled', result: { reason: 'not needed' } });
  });

  it('asks a running execution to stop: it becomes canceling', async () => {
    const created = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.free', parameters: { c: 2 } } });
    await onlyClaimable(created.body.data.id);
    await claimOne(api.t.pool, workerId, 'demo.free');
    const res = await api.request('POST', `/executions/${created.body.data.id}/cancel`);
    expect(res.status).toBe(200);
    expect(res.body.message).toBe('cancel requested: the execution is running and its worker is stopping it');
    expect(res.body.data).toMatchObject({ status: 'canceling', result: { reason: 'cancelled by request' }, worker_id: workerId });
  });

  it('answers 409 for an execution that has ended, changing nothing, and 404 for an unknown one', async () => {
    const created = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.free', parameters: { c: 3 } } });
    await onlyClaimable(created.body.data.id);
    await completeClaimed(api.t.pool, await claimOne(api.t.pool, workerId, 'demo.free'), { ok: true });
    const before = await snapshot(api.t.pool);
    const res = await api.request('POST', `/executions/${created.body.data.id}/cancel`);
    expect(res.status).toBe(409);
    expect(res.body.error).toEqual({
      code: 'execution_terminal',
      message: `execution ${created.body.data.id} has already ended (completed); there is nothing to cancel`,
      request_id: expect.any(String),
    });
    expect(await snapshot(api.t.pool)).toEqual(before);
    expect((await api.request('POST', '/executions/888888888/cancel')).body.error.code).toBe('execution_not_found');
  });
});

describe('POST /executions/{id}/retry', () => {
  it('puts a failed execution back as a new attempt, keeping the failed one in execution_attempts', async () => {
    const created = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.free', parameters: { r: 1 } } });
    const id = created.body.data.id;
    await onlyClaimable(id);
    await failClaimed(api.t.pool, await claimOne(api.t.pool, workerId, 'demo.free'), 'it broke');
    const res = await api.request('POST', `/executions/${id}/retry`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ data: await executionJson(api.t.pool, id), message: 'execution retried: it is scheduled' });
    expect(res.body.data).toMatchObject({ status: 'scheduled', error: null, completed_at: null, attempt: 1 });
    const { rows } = await api.t.pool.query('select attempt, status, error from usher.execution_attempts where execution_id = $1', [id]);
    expect(rows).toEqual([{ attempt: 1, status: 'failed', error: 'it broke' }]);
  });

  it('answers 409 naming the status of an execution that has not ended, and 404 for an unknown one', async () => {
    const created = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.limited', parameters: { r: 2 } } });
    const before = await snapshot(api.t.pool);
    const res = await api.request('POST', `/executions/${created.body.data.id}/retry`);
    expect(res.status).toBe(409);
    expect(res.body.error).toEqual({
      code: 'execution_not_retryable',
      message: `execution ${created.body.data.id} is requested; only failed, timeout, abandoned or cancelled executions can be retried`,
      request_id: expect.any(String),
    });
    expect(await snapshot(api.t.pool)).toEqual(before);
    const missing = await api.request('POST', '/executions/777777777/retry');
    expect([missing.status, missing.body.error.code]).toEqual([404, 'execution_not_found']);
  });
});
