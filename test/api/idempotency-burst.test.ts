/**
 * RELIABILITY T25: one idempotency key enqueued many times at once, through the HTTP API and by plain
 * SQL `INSERT … ON CONFLICT DO NOTHING` on connections of their own. Exactly one execution may hold
 * the key; every HTTP caller gets that execution; it keeps the place in its lane of the first insert.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApi, type TestApi } from '../support/api.ts';

const HTTP_CALLS = 50;
const SQL_INSERTS = 20;
const ROUNDS = 3;
let api: TestApi;
let producers: pg.Client[];

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('demo.idem');
    insert into usher.policies (ref, action_ref, threshold) values ('idem-one', 'demo.idem', 1);`);
  producers = await Promise.all(Array.from({ length: SQL_INSERTS }, async () => {
    const client = new pg.Client({ connectionString: api.t.url });
    await client.connect();
    return client;
  }));
});
afterAll(async () => {
  await Promise.all(producers.map((client) => client.end()));
  await api.close();
});

it(`gives ${HTTP_CALLS} HTTP calls and ${SQL_INSERTS} SQL inserts of one key, all at once, exactly one execution (${ROUNDS} rounds)`, async () => {
  // Nothing admits here (no executor): every execution of these rounds waits in its lane, behind this one.
  const { rows: [head] } = await api.t.pool.query<{ id: string }>(`insert into usher.executions (action_ref) values ('demo.idem') returning id`);
  const holders: string[] = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    const key = `burst-${round}`;
    const http = Promise.all(Array.from({ length: HTTP_CALLS }, (_, n) => api.request('POST', '/executions/execute', {
      body: { action_ref: 'demo.idem', parameters: { from: 'http', n }, idempotency_key: key },
    })));
    const sql = Promise.all(producers.map((client, n) => client.query<{ id: string }>(
      `insert into usher.executions (action_ref, params, idempotency_key) values ('demo.idem', $1, $2)
       on conflict (action_ref, idempotency_key) where idempotency_key is not null and completed_at is null do nothing
       returning id`, [{ from: 'sql', n }, key])));
    const [answers, inserts] = await Promise.all([http, sql]);

    const { rows } = await api.t.pool.query<{ id: string }>(
      `select id from usher.executions where action_ref = 'demo.idem' and idempotency_key = $1`, [key]);
    expect(rows).toHaveLength(1);
    const holder = rows[0]!.id;
    holders.push(holder);
    const created = answers.filter((answer) => answer.status === 201).length;
    const insertedBySql = inserts.filter((result) => result.rows.length === 1);
    // One insert won, by either path; every other HTTP call was told of that execution.
    expect(created + insertedBySql.length).toBe(1);
    expect(insertedBySql.map((result) => result.rows[0]!.id)).toEqual(created === 1 ? [] : [holder]);
    expect(answers.map((answer) => [answer.status === 201 ? 201 : 200, answer.body.data.id]))
      .toEqual(answers.map((answer) => [answer.status === 201 ? 201 : 200, holder]));
    expect(answers.filter((answer) => answer.status === 200).map((answer) => answer.body.message))
      .toEqual(Array(HTTP_CALLS - created).fill(`an execution with idempotency_key "${key}" exists; returned it`));
  }

  // Each holder waits in the lane in the order its round's first insert was made.
  const { rows: lane } = await api.t.pool.query<{ id: string; status: string }>(
    `select id, status from usher.executions where action_ref = 'demo.idem' order by queue_position`);
  expect(lane).toEqual([
    { id: head!.id, status: 'requested' },
    ...holders.map((id) => ({ id, status: 'requested' })),
  ]);
  expect((await api.t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);
});
