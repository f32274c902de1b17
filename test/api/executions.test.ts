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

describe('POST /executions/execute-batch', () => {
  const batch = (executions: unknown[]) => api.request('POST', '/executions/execute-batch', { body: { executions } });
  const lanePositions = async (ids: string[]) => (await api.t.pool.query<{ id: string; queue_position: string }>(
    'select id::text, queue_position::text from usher.executions where id = any($1::bigint[]) order by queue_position', [ids])).rows.map((row) => row.id);

  it('enqueues every item with 201, answering each stored row in the order given, lane items in that order in their lane', async () => {
    const before = await count();
    const res = await batch([
      { action_ref: 'demo.limited', parameters: { n: 1 } },
      { action_ref: 'demo.free', parameters: { n: 2 }, max_retries: 4 },
      { action_ref: 'demo.limited', parameters: { n: 3 }, timeout_seconds: 9 },
      { action_ref: 'demo.limited', parameters: { n: 4 }, run_at: '2099-01-01T00:00:00Z' },
      { action_ref: 'demo.limited', parameters: { n: 5 } },
    ]);
    expect(res.status).toBe(201);
    expect(res.body).not.toHaveProperty('message');
    expect(res.body.data.map((entry: { existing: boolean; execution: { params: unknown; status: string } }) =>
      [entry.existing, entry.execution.params, entry.execution.status])).toEqual([
      [false, { n: 1 }, 'requested'], [false, { n: 2 }, 'scheduled'], [false, { n: 3 }, 'requested'],
      [false, { n: 4 }, 'delayed'], [false, { n: 5 }, 'requested'],
    ]);
    for (const entry of res.body.data) expect(entry.execution).toEqual(await executionJson(api.t.pool, entry.execution.id));
    expect(res.body.data[1].execution.max_retries).toBe(4);
    expect(res.body.data[2].execution.timeout_seconds).toBe(9);
    const ids: string[] = res.body.data.map((entry: { execution: { id: string } }) => entry.execution.id);
    expect([...ids].sort((a, b) => Number(a) - Number(b))).toEqual(ids);
    // The delayed one has no place in its lane until its run_at.
    expect(await lanePositions([ids[0]!, ids[2]!, ids[4]!])).toEqual([ids[0], ids[2], ids[4]]);
    expect(await count()).toBe(before + 5);
  });

  it('answers the holder of an idempotency key, also one taken earlier in the same batch, and 200 when every item existed', async () => {
    const held = await api.request('POST', '/executions/execute', { body: { action_ref: 'demo.limited', parameters: { k: 0 }, idempotency_key: 'held' } });
    const before = await count();
    const items = [
      { action_ref: 'demo.limited', parameters: { k: 1 }, idempotency_key: 'fresh' },
      { action_ref: 'demo.limited', parameters: { k: 2 }, idempotency_key: 'held' },
      { action_ref: 'demo.limited', parameters: { k: 3 }, idempotency_key: 'fresh' },
      { action_ref: 'demo.free', parameters: { k: 4 }, idempotency_key: 'fresh' },
    ];
    const first = await batch(items);
    expect(first.status).toBe(201);
    expect(first.body.message).toBe('2 enqueued; 2 held an idempotency key and returned the execution that holds it');
    const entries = first.body.data as { existing: boolean; execution: { id: string; action_ref: string; params: unknown } }[];
    expect(entries.map((entry) => [entry.existing, entry.execution.action_ref, entry.execution.params])).toEqual([
      [false, 'demo.limited', { k: 1 }], [true, 'demo.limited', { k: 0 }], [true, 'demo.limited', { k: 1 }], [false, 'demo.free', { k: 4 }],
    ]);
    expect(entries[1]!.execution.id).toBe(held.body.data.id);
    expect(entries[2]!.execution.id).toBe(entries[0]!.execution.id);
    expect(await count()).toBe(before + 2);

    const again = await batch(items);
    expect(again.status).toBe(200);
    expect(again.body.message).toBe('0 enqueued; 4 held an idempotency key and returned the execution that holds it');
    expect(again.body.data.map((entry: { existing: boolean; execution: { id: string } }) => [entry.existing, entry.execution.id]))
      .toEqual(entries.map((entry) => [true, entry.execution.id]));
    expect(await count()).toBe(before + 2);
  });

  it('refuses the whole batch when any action is unknown (404) or disabled (409), naming every bad item and storing nothing', async () => {
    const before = await snapshot(api.t.pool);
    const mixed = await batch([
      { action_ref: 'demo.free', parameters: {} },
      { action_ref: 'demo.off', parameters: {} },
      { action_ref: 'demo.nope', parameters: {} },
    ]);
    expect(mixed.status).toBe(404);
    expect(mixed.body.error).toEqual({
      code: 'unknown_action',
      message: 'executions.2.action_ref: unknown action demo.nope; nothing was enqueued (and 1 more)',
      request_id: expect.any(String),
      details: [
        { location: 'body', field: 'executions.1.action_ref', message: 'action demo.off is disabled' },
        { location: 'body', field: 'executions.2.action_ref', message: 'unknown action demo.nope' },
      ],
    });
    const disabled = await batch([{ action_ref: 'demo.free', parameters: {} }, { action_ref: 'demo.off', parameters: {} }]);
    expect([disabled.status, disabled.body.error.code, disabled.body.error.message])
      .toEqual([409, 'action_disabled', 'executions.1.action_ref: action demo.off is disabled; nothing was enqueued']);
    expect(await snapshot(api.t.pool)).toEqual(before);
  });

  it('names each bad field of each item in a 400, and refuses an empty batch and one over 1,000 items', async () => {
    const before = await snapshot(api.t.pool);
    const bad = await batch([{ action_ref: 'demo.free', parameters: {} }, { action_ref: 'demo.free', parameters: [1], extra: 1 }]);
    expect([bad.status, bad.body.error.code]).toEqual([400, 'invalid_request']);
    expect(bad.body.error.details).toEqual([
      { location: 'body', field: 'executions.1.parameters', message: 'Invalid input: expected record, received array' },
      { location: 'body', field: 'executions.1.extra', message: 'unknown field' },
    ]);
    const empty = await batch([]);
    expect([empty.status, empty.body.error.details]).toEqual([400, [
      { location: 'body', field: 'executions', message: 'Too small: expected array to have >=1 items' },
    ]]);
    const tooMany = await batch(Array.from({ length: 1001 }, () => ({ action_ref: 'demo.free', parameters: {} })));
    expect([tooMany.status, tooMany.body.error.details]).toEqual([400, [
      { location: 'body', field: 'executions', message: 'Too big: expected array to have <=1000 items' },
    ]]);
    expect(await snapshot(api.t.pool)).toEqual(before);
    const most = await batch(Array.from({ length: 1000 }, (_, n) => ({ action_ref: 'demo.free', parameters: { n } })));
    expect([most.status, most.body.data.length]).toEqual([201, 1000]);
    expect(most.body.data.map((entry: { execution: { params: { n: number } } }) => entry.execution.params.n))
      .toEqual(Array.from({ length: 1000 }, (_, n) => n));
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
