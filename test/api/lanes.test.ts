import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { READ_TOKEN, startTestApi, type TestApi } from '../support/api.ts';

let api: TestApi;
const lane = 'action:ops.restart#["db-1"]';

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('ops.restart');
    insert into usher.policies (ref, action_ref, threshold, parameters) values ('restart-per-host', 'ops.restart', 1, '{host}');
    insert into usher.executions (action_ref, params) values ('ops.restart', '{"host": "db-1"}');`);
});
afterAll(() => api.close());

async function laneRow(): Promise<Record<string, unknown>> {
  const { rows } = await api.t.pool.query(
    `select paused_until, pause_reason, blocked_by, blocked_reason from usher.lanes where lane_key = $1`, [lane]);
  return rows[0];
}

describe('lanes', () => {
  it('pauses a lane until a time and resumes it, answering with the lane', async () => {
    const paused = await api.request('POST', '/lanes/pause', { body: { lane_key: lane, until: '2030-01-01T00:00:00Z', reason: 'upstream 429' } });
    expect(paused.status).toBe(200);
    expect(paused.body.message).toBe('lane paused');
    expect(paused.body.data).toMatchObject({ lane_key: lane, queue_length: 1, paused_until: '2030-01-01T00:00:00.000Z', pause_reason: 'upstream 429' });
    expect(await laneRow()).toEqual({ paused_until: new Date('2030-01-01T00:00:00Z'), pause_reason: 'upstream 429', blocked_by: null, blocked_reason: null });

    const resumed = await api.request('POST', '/lanes/resume', { body: { lane_key: lane } });
    expect(resumed.status).toBe(200);
    expect(resumed.body.data).toMatchObject({ lane_key: lane, paused_until: null, pause_reason: null });
  });

  it('unblocks a blocked lane', async () => {
    await api.t.pool.query(`update usher.lanes set blocked_by = 1, blocked_reason = 'execution 1 ended failed', blocked_at = now() where lane_key = $1`, [lane]);
    const unblocked = await api.request('POST', '/lanes/unblock', { body: { lane_key: lane } });
    expect(unblocked.status).toBe(200);
    expect(unblocked.body.data).toMatchObject({ lane_key: lane, blocked_by: null, blocked_reason: null });
    expect(await laneRow()).toMatchObject({ blocked_by: null, blocked_reason: null });
  });

  it('answers 404 for a lane that does not exist, 400 for a malformed key or time, 403 for a read token, and changes nothing', async () => {
    const before = await laneRow();
    const missing = await api.request('POST', '/lanes/resume', { body: { lane_key: 'action:ops.restart#["db-9"]' } });
    expect([missing.status, missing.body.error.code]).toEqual([404, 'lane_not_found']);
    const malformed = await api.request('POST', '/lanes/pause', { body: { lane_key: "'; drop table usher.lanes; --", until: 'tomorrow' } });
    expect([malformed.status, malformed.body.error.code]).toEqual([400, 'invalid_request']);
    expect(malformed.body.error.details.map((problem: { field: string }) => problem.field).sort()).toEqual(['lane_key', 'until']);
    const readOnly = await api.request('POST', '/lanes/pause', { token: READ_TOKEN, body: { lane_key: lane, until: '2030-01-01T00:00:00Z' } });
    expect(readOnly.status).toBe(403);
    expect(await laneRow()).toEqual(before);
    const { rows } = await api.t.pool.query('select count(*)::int as n from usher.lanes');
    expect(rows[0].n).toBe(1);
  });
});
