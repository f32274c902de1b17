/**
 * The hot path reads a bounded number of rows, whatever the backlog: each statement finds its rows
 * through the primary key or from the head of a partial index, never by walking every waiting,
 * scheduled or running execution. Counted with pg_stat_get_xact_tuples_returned, which gives the
 * current transaction's own reads of a table (sequential scans) or an index (counts are stable
 * where timings are not).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;
let workerId: string;
const LANE_BACKLOG = 5_000;
const OTHER_SCHEDULED = 3_000;
const OTHER_RUNNING = 1_000;

beforeAll(async () => {
  t = await createTestDatabase();
  workerId = await calls.registerWorker(t.pool, {
    name: 'sql-hot-path', host: 'test', pid: 1, concurrency: 10,
    actions: [{ ref: 'hot.serial' }, { ref: 'hot.free' }, { ref: 'hot.elsewhere' }],
  });
  await t.pool.query(`insert into usher.policies (ref, action_ref, threshold, max_queue_length) values ('hot-serial', 'hot.serial', 1, 100000)`);
  // A long serial lane, a backlog of another action no worker here runs, and many running elsewhere.
  await t.pool.query(`insert into usher.executions (action_ref) select 'hot.serial' from generate_series(1, $1)`, [LANE_BACKLOG]);
  await t.pool.query(`insert into usher.executions (action_ref) select 'hot.elsewhere' from generate_series(1, $1)`, [OTHER_SCHEDULED + OTHER_RUNNING]);
  await t.pool.query(`insert into usher.executions (action_ref) select 'hot.free' from generate_series(1, 3)`);
  await admitQueued(t.pool);
  await calls.claimScheduled(t.pool, '0', ['hot.elsewhere'], OTHER_RUNNING, 300);
  // With statistics that say how many rows each index holds, as a running system has them.
  await t.pool.query('analyze usher.executions');
}, 120_000);
afterAll(() => t.drop());

interface Reads {
  /** Rows read by sequential scans of usher.executions. */
  seq: number;
  /** Index entries read from indexes of usher.executions. */
  index: number;
}

/**
 * Runs `work` in a transaction that is rolled back, and counts what it read of usher.executions. A
 * fresh connection each time: a backend's unflushed counts can include its earlier transactions.
 */
async function readsOf(work: (client: pg.Client) => Promise<unknown>, database: TestDatabase = t): Promise<Reads> {
  const client = await database.connect();
  try {
    return await readsIn(client, work);
  } finally {
    await client.end();
  }
}

/** Counts what `work` reads of usher.executions in a rolled-back transaction of `client`. */
async function readsIn(client: pg.Client, work: (client: pg.Client) => Promise<unknown>): Promise<Reads> {
  try {
    await client.query('begin');
    await work(client);
    const { rows: [reads] } = await client.query<{ seq: number; index: number }>(
      `select pg_stat_get_xact_tuples_returned('usher.executions'::regclass)::int as seq,
         (select sum(pg_stat_get_xact_tuples_returned(i.indexrelid))::int from pg_index i where i.indrelid = 'usher.executions'::regclass) as index`,
    );
    return reads!;
  } finally {
    await client.query('rollback');
  }
}

describe('reads on the hot path, with 5,000 waiting in a lane, 3,000 scheduled and 1,000 running of another action', () => {
  it('claims the lane head and the free executions without walking the backlog', async () => {
    const reads = await readsOf(async (client) => {
      const claims = await calls.claimScheduled(client, workerId, ['hot.serial', 'hot.free'], 10, 30);
      expect(claims).toHaveLength(4);
    });
    expect(reads.seq).toBe(0);
    expect(reads.index).toBeLessThan(50);
  });

  it('completes a serial execution, admits the next of its lane and claims it, reading a few dozen entries', async () => {
    const [claim] = await calls.claimScheduled(t.pool, workerId, ['hot.serial'], 1, 30);
    const reads = await readsOf(async (client) => {
      const answer = await calls.completeAndClaim(client, [{ claim: claim!, resultJson: 'null' }], { workerId, actionRefs: ['hot.serial'], limit: 1, leaseSeconds: 30 });
      expect(answer.statuses).toEqual(['completed']);
      expect(answer.claims).toHaveLength(1);
    });
    expect(reads.seq).toBe(0);
    expect(reads.index).toBeLessThan(50);
  });

  it('runs the entry points with generic plans, without JIT (whose compile cost a big table\'s estimates would set off) and without sequential scans', async () => {
    const { rows } = await t.pool.query<{ name: string; config: string[] }>(
      `select p.proname as name, p.proconfig as config from pg_proc p
       where p.pronamespace = 'usher'::regnamespace
         and p.proname in ('claim_scheduled', 'complete_and_claim', 'end_execution', 'heartbeat_worker', 'admit_lane')
       order by 1`);
    expect(rows).toEqual(['admit_lane', 'claim_scheduled', 'complete_and_claim', 'end_execution', 'heartbeat_worker']
      .map((name) => ({
        name,
        config: [
          'plan_cache_mode=force_generic_plan', 'jit=off', 'enable_seqscan=off',
          ...(name === 'claim_scheduled' ? ['random_page_cost=1.1'] : []),
          ...(name === 'complete_and_claim' ? ['usher.records_own_transitions=on'] : []),
        ],
      })));
  });

  it('writes executions and transitions through one CHECK constraint and only the indexes someone reads', async () => {
    // Each CHECK constraint is prepared again for every statement writing the table (eight cost a
    // third of a serial step), and each index an entry per status change: adding one is a choice.
    const { rows } = await t.pool.query<{ table: string; checks: string[]; indexes: string[] }>(
      `select c.relname as table,
         array(select k.conname::text from pg_constraint k where k.conrelid = c.oid and k.contype = 'c' order by 1) as checks,
         array(select i.relname::text from pg_index x join pg_class i on i.oid = x.indexrelid where x.indrelid = c.oid order by 1) as indexes
       from pg_class c
       where c.relnamespace = 'usher'::regnamespace and c.relname in ('executions', 'execution_transitions')
       order by 1`);
    expect(rows).toEqual([
      { table: 'execution_transitions', checks: [], indexes: ['execution_transitions_pkey'] },
      {
        table: 'executions',
        checks: ['executions_row_rules'],
        indexes: [
          'executions_active_by_lease', 'executions_backing_off_by_run_at', 'executions_by_action_status',
          'executions_delayed_by_run_at', 'executions_ended_by_completed_at',
          'executions_idempotency_key_active', 'executions_pkey', 'executions_requested_by_lane',
          'executions_schedule_tick_unique', 'executions_scheduled_by_action',
        ],
      },
    ]);
  });

  it('renews leases and fails an execution by primary key, not by the running ones', async () => {
    const running = await t.pool.query<{ id: string; lease_token: string }>(
      `select id, lease_token from usher.executions where action_ref = 'hot.elsewhere' and status = 'running' order by id limit 5`);
    const heartbeat = await readsOf(async (client) => {
      const held = await calls.heartbeatWorker(client, '0', running.rows, 30);
      expect(held).toHaveLength(5);
    });
    expect(heartbeat).toEqual({ seq: 0, index: expect.any(Number) });
    expect(heartbeat.index).toBeLessThan(20);

    const failing = await readsOf(async (client) => {
      const [first] = running.rows;
      const status = await client.query(`select usher.fail_execution($1, $2, 'boom', null, false) as status`, [first!.id, first!.lease_token]);
      expect(status.rows).toEqual([{ status: 'failed' }]);
    });
    expect(failing.seq).toBe(0);
    expect(failing.index).toBeLessThan(20);
  });
});

describe('a worker session whose plans were made on a near-empty table that was never analysed', () => {
  it('still reads by primary key and from index heads after the table grew to 25,000 rows', async () => {
    const fresh = await createTestDatabase();
    const session = await fresh.connect();
    try {
      // No statistics ever: the planner sizes the table by its pages when a plan is made, and a
      // session keeps its generic plans until something invalidates them.
      await fresh.pool.query('alter table usher.executions set (autovacuum_enabled = false)');
      const worker = await calls.registerWorker(fresh.pool, {
        name: 'sql-growth', host: 'test', pid: 1, concurrency: 10, actions: [{ ref: 'grow.serial' }],
      });
      await fresh.pool.query(`insert into usher.policies (ref, action_ref, threshold, max_queue_length) values ('grow-serial', 'grow.serial', 1, 100000)`);
      await fresh.pool.query(`insert into usher.executions (action_ref) select 'grow.serial' from generate_series(1, 3)`);
      await admitQueued(fresh.pool);
      const next = { workerId: worker, actionRefs: ['grow.serial'], limit: 1, leaseSeconds: 30 };
      const [first] = await calls.claimScheduled(session, worker, ['grow.serial'], 1, 30);
      const planned = await calls.completeAndClaim(session, [{ claim: first!, resultJson: 'null' }], next);
      expect(planned.claims).toHaveLength(1);

      await fresh.pool.query(`insert into usher.executions (action_ref) select 'grow.serial' from generate_series(1, 25000)`);
      const reads = await readsIn(session, async (client) => {
        const answer = await calls.completeAndClaim(client, [{ claim: planned.claims[0]!, resultJson: 'null' }], next);
        expect(answer.statuses).toEqual(['completed']);
        expect(answer.claims).toHaveLength(1);
      });
      expect(reads.seq).toBe(0);
      expect(reads.index).toBeLessThan(50);
    } finally {
      await session.end();
      await fresh.drop();
    }
  }, 60_000);
});

describe('claims after thousands of claims since the last vacuum', () => {
  it('start at the oldest scheduled execution instead of walking the entries every earlier claim left in the index', async () => {
    const fresh = await createTestDatabase();
    try {
      // Nothing cleans the index in between: each claim leaves its rows' entries in
      // executions_scheduled_by_action until vacuum removes them. No autovacuum on any table of
      // this database (embedded Postgres runs it): an automatic analyse holds a snapshot, and an
      // entry some snapshot may still need cannot be marked dead, whatever the claim does.
      await fresh.pool.query(`
        do $$
        declare v_table regclass;
        begin
          for v_table in select c.oid::regclass from pg_class c where c.relnamespace = 'usher'::regnamespace and c.relkind = 'r' loop
            execute format('alter table %s set (autovacuum_enabled = false)', v_table);
          end loop;
        end $$`);
      const worker = await calls.registerWorker(fresh.pool, {
        name: 'sql-dead-entries', host: 'test', pid: 1, concurrency: 100, actions: [{ ref: 'drain.free' }],
      });
      await fresh.pool.query(`insert into usher.executions (action_ref) select 'drain.free' from generate_series(1, 3000)`);
      // A backlog that waited through a vacuum: its pages are all-visible, where a locking walk of
      // the index marked none of the entries it passed as dead.
      await fresh.pool.query('vacuum analyze usher.executions');
      const next = { workerId: worker, actionRefs: ['drain.free'], limit: 100, leaseSeconds: 30 };
      let claims = await calls.claimScheduled(fresh.pool, worker, ['drain.free'], 100, 30);
      for (let batch = 0; batch < 24; batch++) {
        const answer = await calls.completeAndClaim(fresh.pool, claims.map((claim) => ({ claim, resultJson: 'null' })), next);
        claims = answer.claims;
      }
      // An entry is marked dead only once no snapshot anywhere on the server may still see its row:
      // a long transaction of another test's database held that back for some batches (901 and 1,801
      // entries read, under the load of the whole suite). Once every transaction older than the
      // drain has ended, the next claim's plain read marks what is left.
      const { rows: [drained] } = await fresh.pool.query<{ xid: string }>('select pg_current_xact_id()::text as xid');
      await waitFor(async () => (await fresh.pool.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
         where pid <> pg_backend_pid() and (age(backend_xmin) >= age($1::text::xid) or age(backend_xid) >= age($1::text::xid))`,
        [drained!.xid])).rows[0]!.n === 0, { timeoutMs: 60_000, what: 'every transaction older than the drain to end' });
      claims = (await calls.completeAndClaim(fresh.pool, claims.map((claim) => ({ claim, resultJson: 'null' })), next)).claims;
      const { rows: counts } = await fresh.pool.query<{ status: string; count: number }>(
        'select status, count(*)::int as count from usher.executions group by status order by status');
      expect(counts).toEqual([
        { status: 'completed', count: 2500 },
        { status: 'running', count: 100 },
        { status: 'scheduled', count: 400 },
      ]);

      const reads = await readsOf(async (client) => {
        const claimed = await calls.claimScheduled(client, worker, ['drain.free'], 100, 30);
        expect(claimed.map((claim) => Number(claim.id))).toEqual(Array.from({ length: 100 }, (_, i) => 2601 + i));
      }, fresh);
      // The last batch's 100 entries (not yet marked dead), the oldest scheduled, the 100 claimed
      // and their primary-key entries (301); walking from the start of the range read 2,800.
      expect(reads.seq).toBe(0);
      expect(reads.index).toBeLessThan(400);
    } finally {
      await fresh.drop();
    }
  }, 60_000);
});
