import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../support/api.ts';

let api: TestApi;
const ids: Record<number, string> = {};

/** Twelve executions 1..12 with known statuses, actions and creation times (n minutes after 2030-01-01). */
const fixture: [number, string, string][] = [
  [1, 'alpha.one', 'scheduled'], [2, 'alpha.two', 'scheduled'], [3, 'beta.one', 'scheduled'], [4, 'alpha.one', 'completed'],
  [5, 'alpha.one', 'failed'], [6, 'beta.one', 'running'], [7, 'alpha.two', 'delayed'], [8, 'beta.one', 'canceling'],
  [9, 'alpha.one', 'cancelled'], [10, 'beta.one', 'timeout'], [11, 'alpha.two', 'abandoned'], [12, 'alpha.one', 'requested'],
];

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`insert into usher.actions (ref) values ('alpha.one'), ('alpha.two'), ('beta.one')`);
  for (const [n, action, status] of fixture) {
    const { rows } = await api.t.pool.query('insert into usher.executions (action_ref, params) values ($1, $2) returning id', [action, { n }]);
    ids[n] = rows[0].id;
    await api.t.pool.query(
      `update usher.executions set status = $2,
         created_at = timestamptz '2030-01-01T00:00:00Z' + make_interval(mins => $3),
         completed_at = case when $2 in ('completed', 'failed', 'cancelled', 'timeout', 'abandoned') then now() end,
         lease_token = case when $2 in ('running', 'canceling') then gen_random_uuid() end,
         run_at = case when $2 = 'delayed' then now() + interval '1 day' end
       where id = $1`, [ids[n], status, n]);
  }
  await api.t.pool.query('update usher.executions set enforcement_id = 5 where id = $1', [ids[1]]);
  await api.t.pool.query('update usher.executions set parent_id = $1 where id = $2', [ids[1], ids[2]]);
});
afterAll(() => api.close());

async function listed(query: string): Promise<{ ns: number[]; pagination: unknown }> {
  const res = await api.request('GET', `/executions${query}`, { token: undefined });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { ns: res.body.data.map((execution: { params: { n: number } }) => execution.params.n), pagination: res.body.pagination };
}

describe('GET /executions', () => {
  it('lists every execution newest first, 50 to a page by default', async () => {
    expect(await listed('')).toEqual({
      ns: [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
      pagination: { page: 1, page_size: 50, total_items: 12, total_pages: 1 },
    });
  });

  it('pages with page and per_page, and answers an empty page past the end with the true total', async () => {
    expect(await listed('?per_page=5&page=2')).toEqual({ ns: [7, 6, 5, 4, 3], pagination: { page: 2, page_size: 5, total_items: 12, total_pages: 3 } });
    expect(await listed('?per_page=5&page=3')).toEqual({ ns: [2, 1], pagination: { page: 3, page_size: 5, total_items: 12, total_pages: 3 } });
    expect(await listed('?per_page=5&page=9')).toEqual({ ns: [], pagination: { page: 9, page_size: 5, total_items: 12, total_pages: 3 } });
  });

  it('continues below an id with before_id (keyset)', async () => {
    expect(await listed(`?before_id=${ids[7]}&per_page=2`)).toEqual({ ns: [6, 5], pagination: { page: 1, page_size: 2, total_items: 6, total_pages: 3 } });
  });

  it('filters by one or several statuses, repeated or comma-separated', async () => {
    expect((await listed('?status=completed,failed')).ns).toEqual([5, 4]);
    expect((await listed('?status=running&status=canceling')).ns).toEqual([8, 6]);
    expect((await listed('?status=delayed&status=requested,scheduled')).ns).toEqual([12, 7, 3, 2, 1]);
  });

  it('filters by action, by pack.*, by pack_name, and ANDs them', async () => {
    expect((await listed('?action_ref=alpha.one')).ns).toEqual([12, 9, 5, 4, 1]);
    expect((await listed('?action_ref=alpha.*')).ns).toEqual([12, 11, 9, 7, 5, 4, 2, 1]);
    expect((await listed('?pack_name=beta')).ns).toEqual([10, 8, 6, 3]);
    expect((await listed('?pack_name=beta&action_ref=alpha.*')).ns).toEqual([]);
    expect((await listed('?pack_name=alpha&action_ref=alpha.two&status=abandoned')).ns).toEqual([11]);
  });

  it('filters by enforcement, parent and creation time (exclusive bounds)', async () => {
    expect((await listed('?enforcement=5')).ns).toEqual([1]);
    expect((await listed(`?parent=${ids[1]}`)).ns).toEqual([2]);
    expect((await listed('?created_after=2030-01-01T00:03:00Z&created_before=2030-01-01T02:06:00%2B02:00')).ns).toEqual([5, 4]);
  });

  it('names the bad query parameter in a 400', async () => {
    const cases: [string, string][] = [
      ['?per_page=101', 'invalid query parameter per_page: Too big: expected number to be <=100'],
      ['?page=0', 'invalid query parameter page: Too small: expected number to be >=1'],
      ['?page=-1', 'invalid query parameter page: must be a whole number'],
      ['?per_page=1e3', 'invalid query parameter per_page: must be a whole number'],
      ['?status=done', 'invalid query parameter status.0: Invalid option: expected one of "delayed"|"requested"|"scheduled"|"running"|"canceling"|"completed"|"failed"|"cancelled"|"timeout"|"abandoned"'],
      ['?action_ref=alpha', 'invalid query parameter action_ref: must be <pack>.<name>, or <pack>.* for every action of a pack'],
      ['?created_after=yesterday', 'invalid query parameter created_after: must be an ISO 8601 date-time with a time zone, e.g. 2030-01-01T00:00:00Z'],
      ['?limit=5', 'invalid query parameter limit: unknown field'],
      ['?page=1&page=2', 'invalid query parameter page: Invalid input: expected string, received array'],
    ];
    for (const [query, message] of cases) {
      const res = await api.request('GET', `/executions${query}`);
      expect([query, res.status, res.body.error.code, res.body.error.message]).toEqual([query, 400, 'invalid_request', message]);
    }
  });
});

describe('GET /executions/stats', () => {
  it('counts by status: pending is delayed + requested + scheduled, running includes canceling', async () => {
    const res = await api.request('GET', '/executions/stats');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      data: { total: 12, completed: 1, failed: 1, running: 2, pending: 5, cancelled: 1, timeout: 1, abandoned: 1 },
    });
  });
});
