/**
 * Hostile input through SQL: wrong types, huge and deeply nested params, injected action refs,
 * status tampering, and what the least-privilege role usher_producer may and may not do. Every
 * refusal is a clear error naming the problem, and nothing is written or changed by it.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { migrationsDir, sqlDir } from '../../src/db/migrator.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`
    insert into usher.actions (ref) values ('h.free'), ('h.limited');
    insert into usher.policies (ref, action_ref, threshold, parameters) values ('h-limited', 'h.limited', 2, '{lane}');`);
});
afterAll(() => t.drop());

/** A digest of Usher's schema (tables, columns, constraints, functions, grants) and of its control rows. */
async function fingerprint(): Promise<string> {
  const { rows } = await t.pool.query<{ digest: string }>(`
    select md5(concat_ws('|',
      (select string_agg(format('%s.%s:%s:%s', c.relname, a.attname, a.atttypid::regtype, a.attnotnull), ',' order by c.relname, a.attnum)
       from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = 'usher' and a.attnum > 0 and not a.attisdropped),
      (select string_agg(format('%s:%s', conname, pg_get_constraintdef(oid)), ',' order by conname)
       from pg_constraint where connamespace = 'usher'::regnamespace),
      (select string_agg(md5(pg_get_functiondef(p.oid)), ',' order by p.oid::regprocedure::text)
       from pg_proc p where p.pronamespace = 'usher'::regnamespace and p.prokind in ('f', 'p')),
      (select string_agg(format('%s:%s', relname, relacl), ',' order by relname) from pg_class where relnamespace = 'usher'::regnamespace),
      (select string_agg(format('%s:%s:%s', ref, enabled, threshold), ',' order by ref) from usher.policies),
      (select string_agg(format('%s:%s', ref, enabled), ',' order by ref) from usher.actions),
      (select string_agg(format('%s:%s', lane_key, active_count), ',' order by lane_key) from usher.lanes),
      (select count(*) from usher.executions))) as digest`);
  return rows[0]!.digest;
}

async function refusal(client: pg.ClientBase | pg.Pool, sql: string, values: unknown[] = []): Promise<pg.DatabaseError> {
  const error = await client.query(sql, values).then(() => undefined, (e: unknown) => e);
  expect(error, `expected ${sql.slice(0, 200)} to fail`).toBeInstanceOf(pg.DatabaseError);
  return error as pg.DatabaseError;
}

let before: string;
beforeEach(async () => {
  before = await fingerprint();
});

describe('hostile inserts', () => {
  it('refuses values of the wrong type with the SQLSTATE and message of the bad value, writing nothing', async () => {
    const cases: [string, string, RegExp][] = [
      [`insert into usher.executions (action_ref, params) values ('h.free', 'not json')`, '22P02', /invalid input syntax for type json/],
      [`insert into usher.executions (action_ref, params) values ('h.free', '[1, 2]')`, '23514', /params must be a JSON object, got a JSON array/],
      [`insert into usher.executions (action_ref, params) values ('h.free', '"text"')`, '23514', /params must be a JSON object, got a JSON string/],
      [`insert into usher.executions (action_ref, timeout_seconds) values ('h.free', 'soon')`, '22P02', /invalid input syntax for type integer: "soon"/],
      [`insert into usher.executions (action_ref, timeout_seconds) values ('h.free', -5)`, '23514', /executions_timeout_seconds_positive/],
      [`insert into usher.executions (action_ref, max_retries) values ('h.free', 1000000)`, '23514', /executions_max_retries_range/],
      [`insert into usher.executions (action_ref, run_at) values ('h.free', 'tomorrow-ish')`, '22007', /invalid input syntax for type timestamp with time zone/],
      [`insert into usher.executions (action_ref, idempotency_key) values ('h.free', '')`, '23514', /executions_idempotency_key_length/],
      [`insert into usher.executions (action_ref, params) values ('h.free', '{"a": "\\u0000"}')`, '22P05', /unsupported Unicode escape sequence/],
      [`insert into usher.executions (action_ref) values (null)`, '23503', /unknown action NULL/],
    ];
    for (const [sql, code, message] of cases) {
      const error = await refusal(t.pool, sql);
      expect({ sql, code: error.code, message: error.message }).toEqual({ sql, code, message: expect.stringMatching(message) });
    }
    expect(await fingerprint()).toBe(before);
  });

  it('refuses 10 MB of params with a message giving the size and the 1 MiB limit, and takes 900 kB', async () => {
    const error = await refusal(t.pool,
      `insert into usher.executions (action_ref, params) values ('h.free', jsonb_build_object('blob', repeat('x', 10 * 1024 * 1024)))`);
    expect(error).toMatchObject({ code: '54000', constraint: 'executions_params_size', hint: 'Store large inputs elsewhere and pass a reference in params.' });
    expect(error.message).toMatch(/^usher\.executions: params are 1048\d{4} bytes, over the limit of 1 MiB$/);
    expect(await fingerprint()).toBe(before);
    const { rows } = await t.pool.query(
      `insert into usher.executions (action_ref, params) values ('h.free', jsonb_build_object('blob', repeat('x', 900 * 1024))) returning status`);
    expect(rows).toEqual([{ status: 'scheduled' }]);
  });

  it('takes params nested 2,000 deep, and refuses 200,000 deep with stack depth exceeded, writing nothing', async () => {
    const deep = (depth: number) => `{"a": ${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const error = await refusal(t.pool, `insert into usher.executions (action_ref, params) values ('h.free', $1)`, [deep(200_000)]);
    expect(error.code).toBe('54001');
    expect(error.message).toBe('stack depth limit exceeded');
    expect(await fingerprint()).toBe(before);
    const { rows } = await t.pool.query(
      `insert into usher.executions (action_ref, params) values ('h.free', $1) returning jsonb_typeof(params -> 'a') as a`, [deep(2000)]);
    expect(rows).toEqual([{ a: 'array' }]);
  });

  it('stores injected text as data: action refs are looked up verbatim, and lane values with SQL in them are just lane names', async () => {
    for (const ref of [`'; drop table usher.executions; --`, `h.free' or '1'='1`, `h.free"; select 1; --`, `$$`, `%I %s`, `h.${'x'.repeat(300)}`]) {
      const error = await refusal(t.pool, `insert into usher.executions (action_ref) values ($1)`, [ref]);
      expect(error).toMatchObject({ code: '23503', constraint: 'executions_action_ref_exists' });
      expect(error.message).toBe(`usher.executions: unknown action ${`'${ref.replaceAll("'", "''")}'`}`);
    }
    expect(await fingerprint()).toBe(before);
    const lane = `x'); delete from usher.lanes; --`;
    const { rows } = await t.pool.query(
      `insert into usher.executions (action_ref, params) values ('h.limited', jsonb_build_object('lane', $1::text)) returning lane_key, status`, [lane]);
    expect(rows).toEqual([{ lane_key: `action:h.limited#${JSON.stringify([lane])}`, status: 'requested' }]);
    await t.pool.query('call usher.admit_queued()');
    expect((await t.pool.query('select lane_key, active_count from usher.lanes')).rows).toEqual([{ lane_key: rows[0].lane_key, active_count: 1 }]);
    expect((await t.pool.query('select * from usher.check_invariants()')).rows).toEqual([]);
  });

  it('refuses a status or a column Usher owns at insert, and a status outside the state machine by update', async () => {
    for (const [sql, constraint] of [
      [`insert into usher.executions (action_ref, status) values ('h.free', 'completed')`, 'executions_insert_status_is_requested'],
      [`insert into usher.executions (action_ref, status) values ('h.free', 'running')`, 'executions_insert_status_is_requested'],
      [`insert into usher.executions (action_ref, lease_token) values ('h.free', gen_random_uuid())`, 'executions_insert_managed_columns_unset'],
      [`insert into usher.executions (action_ref, attempt) values ('h.free', 7)`, 'executions_insert_managed_columns_unset'],
      [`insert into usher.executions (action_ref, lane_key, params) values ('h.limited', 'action:h.limited#["other"]', '{"lane": "a"}')`, 'executions_insert_managed_columns_unset'],
    ] as const) {
      expect(await refusal(t.pool, sql)).toMatchObject({ code: '23514', constraint });
    }
    const { rows: [row] } = await t.pool.query(`insert into usher.executions (action_ref) values ('h.free') returning id`);
    expect(await refusal(t.pool, `update usher.executions set status = 'done' where id = $1`, [row.id]))
      .toMatchObject({ code: '23514', constraint: 'executions_status_known' });
    expect(await refusal(t.pool, `update usher.executions set status = 'completed' where id = $1`, [row.id]))
      .toMatchObject({ code: '23514', constraint: 'executions_completed_at_iff_terminal' });
    expect(await refusal(t.pool, `update usher.executions set status = 'running' where id = $1`, [row.id]))
      .toMatchObject({ code: '23514', constraint: 'executions_lease_iff_running' });
    // The rules the insert trigger does not see again: each update names the one it breaks.
    for (const [set, constraint] of [
      [`params = '[1]'`, 'executions_params_is_object'],
      [`timeout_seconds = 0`, 'executions_timeout_seconds_positive'],
      [`max_retries = -1`, 'executions_max_retries_range'],
      [`idempotency_key = repeat('k', 201)`, 'executions_idempotency_key_length'],
      [`schedule_tick = now()`, 'executions_schedule_tick_iff_schedule_id'],
    ] as const) {
      expect(await refusal(t.pool, `update usher.executions set ${set} where id = $1`, [row.id])).toMatchObject({
        code: '23514', constraint, schema: 'usher', table: 'executions',
        message: `new row for relation "executions" violates check constraint "${constraint}"`,
      });
    }
    expect((await t.pool.query('select status from usher.executions where id = $1', [row.id])).rows).toEqual([{ status: 'scheduled' }]);
  });
});

describe('the least-privilege role usher_producer', () => {
  /** A session acting as usher_producer (SET ROLE keeps the test independent of pg_hba). */
  async function asProducer(): Promise<pg.Client> {
    const client = await t.connect();
    await client.query('set role usher_producer');
    expect((await client.query('select current_user')).rows).toEqual([{ current_user: 'usher_producer' }]);
    return client;
  }

  it('exists, cannot log in, and is a member of nothing', async () => {
    const { rows } = await t.pool.query(`
      select rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolinherit,
        (select count(*)::int from pg_auth_members m where m.member = r.oid) as member_of
      from pg_roles r where rolname = 'usher_producer'`);
    expect(rows).toEqual([{ rolcanlogin: false, rolsuper: false, rolcreaterole: false, rolcreatedb: false, rolinherit: true, member_of: 0 }]);
  });

  it('enqueues with a plain INSERT, idempotently with ON CONFLICT, gets id and status back, and reads the views', async () => {
    const producer = await asProducer();
    const inserted = await producer.query(
      `insert into usher.executions (action_ref, params, max_retries, timeout_seconds, run_at)
       values ('h.limited', '{"lane": "p"}', 2, 30, null), ('h.free', '{}', null, null, null)
       returning id, status`);
    expect(inserted.rows.map((row) => row.status)).toEqual(['requested', 'scheduled']);
    const idempotent = `insert into usher.executions (action_ref, params, idempotency_key) values ('h.free', '{}', 'order-42')
       on conflict (action_ref, idempotency_key) where idempotency_key is not null and completed_at is null do nothing
       returning id`;
    const first = await producer.query(idempotent);
    const again = await producer.query(idempotent);
    expect([first.rowCount, again.rowCount]).toEqual([1, 0]);
    expect((await producer.query(`select id, status from usher.executions where id = $1`, [first.rows[0].id])).rows)
      .toEqual([{ id: first.rows[0].id, status: 'scheduled' }]);
    expect((await producer.query(`select queue_length::int from usher.queue_stats where action_ref = 'h.limited'`)).rows.length).toBe(1);
    expect((await producer.query(`select queue_length::int, threshold from usher.lane_stats where lane_key = 'action:h.limited#["p"]'`)).rows)
      .toEqual([{ queue_length: 1, threshold: 2 }]);
    expect((await producer.query(`select count(*)::int as n from usher.execution_statuses`)).rows).toEqual([{ n: 10 }]);
    const stored = await t.pool.query(`select max_retries, timeout_seconds, lane_key from usher.executions where id = $1`, [inserted.rows[0].id]);
    expect(stored.rows).toEqual([{ max_retries: 2, timeout_seconds: 30, lane_key: 'action:h.limited#["p"]' }]);
  });

  it('may do nothing else: no update, delete, reads of params or other tables, state transitions, owned columns or DDL', async () => {
    const { rows: [victim] } = await t.pool.query(`insert into usher.executions (action_ref, params) values ('h.free', '{"secret": 1}') returning id`);
    before = await fingerprint();
    const producer = await asProducer();
    const forbidden = [
      `update usher.executions set status = 'completed', completed_at = now() where id = ${victim.id}`,
      `update usher.executions set params = '{}' where id = ${victim.id}`,
      `delete from usher.executions where id = ${victim.id}`,
      `truncate usher.executions`,
      `select params from usher.executions where id = ${victim.id}`,
      `select * from usher.executions`,
      `select * from usher.actions`,
      `select * from usher.policies`,
      `select * from usher.lanes`,
      `select * from usher.workers`,
      `select * from usher.execution_attempts`,
      `select * from usher.schema_migrations`,
      `insert into usher.executions (action_ref, status) values ('h.free', 'completed')`,
      `insert into usher.executions (action_ref, lease_token) values ('h.free', gen_random_uuid())`,
      `insert into usher.executions (action_ref, lane_key) values ('h.limited', 'global')`,
      `insert into usher.actions (ref) values ('evil.action')`,
      `update usher.policies set threshold = 1000`,
      `update usher.lanes set active_count = 0`,
      `select * from usher.cancel_execution(${victim.id})`,
      `select usher.complete_execution(${victim.id}, gen_random_uuid(), '{}')`,
      `select usher.expire_running_executions(0)`,
      `select usher.delete_finished_executions(interval '0', 10)`,
      `select usher.register_worker('evil', 'h', 1, '[{"ref": "h.free"}]', 1)`,
      `call usher.admit_queued()`,
      `select * from usher.check_invariants()`,
      `create table usher.evil (id int)`,
      `create function usher.evil() returns int language sql as 'select 1'`,
    ];
    const outcomes: Record<string, string> = {};
    for (const sql of forbidden) {
      const error = await producer.query(sql).then(() => undefined, (e: unknown) => e as pg.DatabaseError);
      outcomes[sql] = error ? `${error.code} ${error.message.split(' for ')[0]}` : 'allowed';
    }
    expect(outcomes).toEqual(Object.fromEntries(forbidden.map((sql) => [sql, expect.stringMatching(/^42501 permission denied/)])));
    expect(await fingerprint()).toBe(before);
    expect((await t.pool.query(`select status, params from usher.executions where id = $1`, [victim.id])).rows)
      .toEqual([{ status: 'scheduled', params: { secret: 1 } }]);
  });

  it('works for a login role it is granted to, as the README says', async () => {
    const login = `usher_test_producer_${randomBytes(4).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    await t.pool.query(`create role ${login} login password '${password}'`);
    try {
      await t.pool.query(`grant usher_producer to ${login}`);
      const url = new URL(t.url);
      url.username = login;
      url.password = password;
      const client = new pg.Client({ connectionString: url.toString() });
      await client.connect();
      try {
        const { rows } = await client.query(`insert into usher.executions (action_ref, params) values ('h.free', '{"via": "login"}') returning status`);
        expect(rows).toEqual([{ status: 'scheduled' }]);
        expect((await refusal(client, 'select params from usher.executions')).code).toBe('42501');
      } finally {
        await client.end();
      }
    } finally {
      await t.pool.query(`drop role ${login}`);
    }
  });

  it('survives migrating again when the role already exists (roles are shared by every database of the cluster)', async () => {
    const migration = await readFile(`${migrationsDir}/0005_add_producer_role_and_retention_index.sql`, 'utf8');
    const roleBlock = migration.slice(0, migration.indexOf('-- Retention'));
    await t.pool.query(roleBlock);
    await t.pool.query(await readFile(`${sqlDir}/095_producer_access.sql`, 'utf8'));
    expect((await t.pool.query(`select count(*)::int as n from pg_roles where rolname = 'usher_producer'`)).rows).toEqual([{ n: 1 }]);
    expect(await fingerprint()).toBe(before);
  });
});
