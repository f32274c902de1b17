/**
 * Shared by the chaos tests: the scale switch (USHER_CHAOS=full), workers on the chaos pack, audit
 * triggers that record every admission and every terminal transition, the handlers' run log, and the
 * checks every scenario ends with.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, spawnUsher, type UsherProcess } from '../support/processes.ts';
import { waitFor } from '../support/wait.ts';

/** `USHER_CHAOS=full` (npm run test:chaos) runs every scenario at full size; otherwise the CI subset runs small. */
export const FULL = process.env.USHER_CHAOS === 'full';

export function scale<T>(small: T, full: T): T {
  return FULL ? full : small;
}

export const chaosPacks = fileURLToPath(new URL('./packs', import.meta.url));

export async function startChaosWorker(
  databaseUrl: string,
  options: { concurrency?: number; name?: string; env?: Record<string, string> } = {},
): Promise<UsherProcess> {
  const args = ['worker', '--packs', chaosPacks, '--concurrency', String(options.concurrency ?? 4)];
  if (options.name) args.push('--name', options.name);
  const proc = spawnUsher(args, { DATABASE_URL: databaseUrl, ...options.env });
  await proc.waitForEvent('worker:started');
  return proc;
}

/**
 * Audit tables fed by triggers, in the test's own database: every admission (requested → scheduled,
 * in lane-lock order, so `seq` is the admission order within a lane; or straight to scheduled for an
 * execution without a lane, at insert or at the end of its delay), every terminal transition,
 * every slot taken or given back by an execution, and, at the commit of every transaction that
 * changed a lane's row, that row's counter beside the executions holding its slots.
 *
 * The lane check is a deferred constraint trigger: it runs at commit, while the transaction still
 * holds the lane's row lock, which every change to the lane's holders takes. Its count of holders
 * is therefore exact at that instant, so a counter that drifts (a slot released twice, an
 * admission past the threshold) shows up at the transaction that caused it, even if a later one
 * puts the counter right again.
 */
export async function installAudit(pool: pg.Pool): Promise<void> {
  await pool.query(`
    create table if not exists public.chaos_admissions (
      seq bigserial primary key, id bigint not null, lane_key text, queue_position bigint, attempt int, scheduled_at timestamptz);
    create table if not exists public.chaos_endings (
      seq bigserial primary key, id bigint not null, status text not null, attempt int, worker_id bigint);
    create table if not exists public.chaos_slot_ops (
      seq bigserial primary key, id bigint not null, lane_key text not null, op text not null, from_status text, to_status text, attempt int);
    create table if not exists public.chaos_lane_checks (
      seq bigserial primary key, lane_key text not null, counted int not null, holders int not null, threshold int,
      policy_version text, total_admitted bigint not null, txid bigint not null default txid_current());
    -- Only the audit reads it: it finds a lane's holders without reading the action's every row.
    create index if not exists chaos_holders_by_lane on usher.executions (lane_key)
      where status in ('scheduled', 'running', 'canceling');
    create or replace function public.chaos_audit() returns trigger language plpgsql as $$
    declare
      was_holding boolean := old.status in ('scheduled', 'running', 'canceling');
      is_holding boolean := new.status in ('scheduled', 'running', 'canceling');
    begin
      if old.status in ('requested', 'delayed') and new.status = 'scheduled' then
        insert into public.chaos_admissions (id, lane_key, queue_position, attempt, scheduled_at)
        values (new.id, new.lane_key, new.queue_position, new.attempt, new.scheduled_at);
      end if;
      if old.completed_at is null and new.completed_at is not null then
        insert into public.chaos_endings (id, status, attempt, worker_id) values (new.id, new.status, new.attempt, new.worker_id);
      end if;
      if new.lane_key is not null and was_holding <> is_holding then
        insert into public.chaos_slot_ops (id, lane_key, op, from_status, to_status, attempt)
        values (new.id, new.lane_key, case when is_holding then 'take' else 'give' end, old.status, new.status, new.attempt);
      end if;
      return null;
    end $$;
    create or replace trigger chaos_audit after update of status on usher.executions
      for each row execute function public.chaos_audit();
    -- An execution without a lane is admitted by its insert: recorded so that it counts as its
    -- first admission if it joins a lane later (a retry of an action paused meanwhile).
    create or replace function public.chaos_audit_insert() returns trigger language plpgsql as $$
    begin
      insert into public.chaos_admissions (id, lane_key, queue_position, attempt, scheduled_at)
      values (new.id, null, new.queue_position, new.attempt, new.scheduled_at);
      return null;
    end $$;
    create or replace trigger chaos_audit_insert after insert on usher.executions
      for each row when (new.status = 'scheduled') execute function public.chaos_audit_insert();
    create or replace function public.chaos_lane_check() returns trigger language plpgsql as $$
    begin
      insert into public.chaos_lane_checks (lane_key, counted, holders, threshold, policy_version, total_admitted)
      select l.lane_key, l.active_count,
        (select count(*) from usher.executions e
          where e.lane_key = l.lane_key and e.status in ('scheduled', 'running', 'canceling')),
        p.threshold, (select xmin::text from usher.policies where id = p.id),
        l.total_admitted
      from usher.lanes l
      cross join lateral usher.lane_policy(l.lane_key) p
      where l.lane_key = new.lane_key;
      return null;
    end $$;
    drop trigger if exists chaos_lane_check on usher.lanes;
    create constraint trigger chaos_lane_check after insert or update on usher.lanes
      deferrable initially deferred for each row execute function public.chaos_lane_check();`);
  await expectLaneCheckCatchesDrift(pool);
}

/**
 * The lane check must be able to fail: a lane whose counter says one slot is held while no
 * execution holds it is recorded as such (then removed, so the scenario starts clean).
 */
async function expectLaneCheckCatchesDrift(pool: pg.Pool): Promise<void> {
  const lane = 'action:chaos.audit-self-check';
  await pool.query('insert into usher.lanes (lane_key, active_count) values ($1, 1)', [lane]);
  const { rows } = await pool.query('select counted, holders from public.chaos_lane_checks where lane_key = $1', [lane]);
  expect(rows).toEqual([{ counted: 1, holders: 0 }]);
  await pool.query('delete from usher.lanes where lane_key = $1', [lane]);
  await pool.query('delete from public.chaos_lane_checks where lane_key = $1', [lane]);
}

/** Cuts every Usher connection to the database (`pg_terminate_backend`), as a restart or a failover does; returns how many. */
export async function terminateUsherBackends(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    `select count(*) filter (where pg_terminate_backend(pid))::int as n from pg_stat_activity
     where datname = current_database() and application_name like 'usher-%'`);
  return rows[0]!.n;
}

/** Inserts `count` executions in one statement, spread round-robin over `lanes` lanes (params.lane = 'l0'…). */
export async function enqueueSpread(
  pool: pg.Pool,
  action: string,
  count: number,
  options: { lanes?: number; ms?: number | [number, number]; prefix?: string; extra?: Record<string, unknown> } = {},
): Promise<{ first: string; last: string }> {
  const [lo, hi] = Array.isArray(options.ms) ? options.ms : [options.ms ?? 0, options.ms ?? 0];
  const { rows } = await pool.query<{ first: string; last: string }>(
    `with inserted as (
       insert into usher.executions (action_ref, params)
       select $1::text, jsonb_build_object('lane', $2::text || (g % $3::int), 'n', g, 'ms', $4::int + floor(random() * ($5::int - $4::int + 1))::int) || $6::jsonb
       from generate_series(0, $7::int - 1) g
       order by g
       returning id)
     select min(id) as first, max(id) as last from inserted`,
    [action, options.prefix ?? 'l', options.lanes ?? 1, lo, hi, JSON.stringify(options.extra ?? {}), count],
  );
  return rows[0]!;
}

/** Waits until every execution with id in [first, last] has ended; returns the status counts. */
export async function waitAllEnded(pool: pg.Pool, range: { first: string; last: string }, timeoutMs: number): Promise<Record<string, number>> {
  await waitFor(async () => (await pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id between $1 and $2 and completed_at is null`, [range.first, range.last],
  )).rows[0]!.n === 0, { what: `executions ${range.first}..${range.last} to end`, timeoutMs, intervalMs: 250 });
  return statusCounts(pool, range);
}

export async function statusCounts(pool: pg.Pool, range: { first: string; last: string }): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ status: string; n: number }>(
    `select status, count(*)::int as n from usher.executions where id between $1 and $2 group by status order by status`,
    [range.first, range.last]);
  return Object.fromEntries(rows.map((row) => [row.status, row.n]));
}

export interface RunLog {
  readonly path: string;
  /** The attempts each execution's handler was started under, in order. */
  starts(): Map<string, number[]>;
  remove(): void;
}

export interface Chaos {
  readonly t: TestDatabase;
  readonly log: RunLog;
}

/**
 * Registers the hooks of a chaos test file (or describe block): a database of its own with the
 * audit installed and `setupSql` run, and a run log; afterwards every process it spawned is killed
 * and both are removed.
 */
export function useChaosDatabase(setupSql: string): Chaos {
  let t: TestDatabase | undefined;
  let log: RunLog | undefined;
  beforeAll(async () => {
    t = await createTestDatabase();
    log = runLog();
    await installAudit(t.pool);
    await t.pool.query(setupSql);
  });
  afterAll(async () => {
    await killAll();
    await t?.drop();
    log?.remove();
  });
  return {
    get t() {
      return t!;
    },
    get log() {
      return log!;
    },
  };
}

/** A file the c.work handler appends `id attempt pid` to on every start. */
export function runLog(): RunLog {
  const dir = mkdtempSync(join(tmpdir(), 'usher-chaos-'));
  const path = join(dir, 'runs.log');
  return {
    path,
    starts() {
      const byId = new Map<string, number[]>();
      let text = '';
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        return byId;
      }
      for (const line of text.split('\n').filter(Boolean)) {
        const [id, attempt] = line.split(' ');
        byId.set(id!, [...(byId.get(id!) ?? []), Number(attempt)]);
      }
      return byId;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * What every scenario must leave behind: the invariant check passes, no slot is held, each lane
 * admitted its executions (first admissions) in queue order, and each execution ended exactly once.
 */
export async function expectSoundQueue(pool: pg.Pool, range: { first: string; last: string }): Promise<void> {
  const q = async (sql: string, values: unknown[] = []) => (await pool.query(sql, values)).rows;
  expect(await q('select * from usher.check_invariants()')).toEqual([]);
  expect(await q('select lane_key, active_count from usher.lanes where active_count <> 0')).toEqual([]);
  expect(await q(`select id, status from usher.executions where id between $1 and $2 and status in ('scheduled', 'running', 'canceling')`,
    [range.first, range.last])).toEqual([]);
  await expectLaneOrder(pool, range);
  const endings = await q(`
    select e.id, count(a.id)::int as endings
    from usher.executions e left join public.chaos_endings a on a.id = e.id
    where e.id between $1 and $2
    group by e.id having count(a.id) <> 1 limit 5`, [range.first, range.last]);
  expect(endings, 'one terminal transition per execution').toEqual([]);
  await expectSlotsHeldWithinBounds(pool, range);
}

/**
 * Each lane admitted its executions (first admissions) in queue order. `rejoined` are executions an
 * operator retried: one cancelled before it ran goes back to its old place after later ones ran.
 */
export async function expectLaneOrder(pool: pg.Pool, range: { first: string; last: string }, rejoined: string[] = []): Promise<void> {
  // One admission statement admits several of a lane at one instant (one scheduled_at), and its row
  // triggers fire in whatever order the update visits them; admissions of one lane are serialised by
  // its lock, so a later one has a later scheduled_at. Order: the instant, then the queue position.
  const { rows: inversions } = await pool.query(`
    with firsts as (
      select distinct on (id) id, lane_key, queue_position, scheduled_at from public.chaos_admissions
      where id between $1 and $2 and id <> all ($3::bigint[]) order by id, seq),
    ordered as (
      select lane_key, id, queue_position,
        lag(queue_position) over (partition by lane_key order by scheduled_at, queue_position) as previous
      from firsts
      where lane_key is not null)
    select lane_key, id, queue_position, previous from ordered where previous > queue_position limit 5`, [range.first, range.last, rejoined]);
  expect(inversions, 'per-lane admission order').toEqual([]);
}

/**
 * The slot invariant over the whole run, not only at its end: at the commit of every transaction
 * that changed a lane, its counter equalled the executions holding its slots, and a transaction
 * that admitted left no more holders than the threshold; each execution of a lane took and gave
 * back its slot in turn, ending with none held.
 */
export async function expectSlotsHeldWithinBounds(pool: pg.Pool, range: { first: string; last: string }): Promise<void> {
  const q = async (sql: string, values: unknown[] = []) => (await pool.query(sql, values)).rows;
  const [{ laned, checks }] = await q(`
    select (select count(*)::int from usher.executions where id between $1 and $2 and lane_key is not null) as laned,
      (select count(*)::int from public.chaos_lane_checks) as checks`, [range.first, range.last]);
  if (laned > 0) expect(checks, 'lane commits audited').toBeGreaterThan(0);
  console.log(`slot audit: ${checks} lane commits checked, ${laned} executions in lanes`);
  expect(await q(`
    select seq, lane_key, counted, holders from public.chaos_lane_checks
    where counted <> holders order by seq limit 5`), 'lane counter equal to its holders at every commit').toEqual([]);
  // A policy changed by another transaction meanwhile is read here at its new threshold, which the
  // admission may not have seen: those commits are judged only by the counter check above.
  expect(await q(`
    with ordered as (
      select seq, lane_key, holders, threshold, total_admitted, policy_version,
        lag(total_admitted) over (partition by lane_key order by seq) as admitted_before,
        lag(policy_version) over (partition by lane_key order by seq) as version_before
      from public.chaos_lane_checks)
    select seq, lane_key, holders, threshold from ordered
    where total_admitted > admitted_before and holders > threshold
      and policy_version is not distinct from version_before
    order by seq limit 5`), 'no admission past the threshold').toEqual([]);
  // Per execution, ops must read take, give, take, give, …: a give without a take is a double release.
  expect(await q(`
    with ordered as (
      select id, op, seq, row_number() over (partition by id order by seq) as n, count(*) over (partition by id) as ops
      from public.chaos_slot_ops where id between $1 and $2)
    select id, op, n, ops from ordered
    where op <> case when n % 2 = 1 then 'take' else 'give' end or (n = ops and op <> 'give')
    order by id, n limit 5`, [range.first, range.last]), 'slots taken and given back in turn').toEqual([]);
}

/** Each (execution, attempt) started at most once, and no execution ran more attempts than it was charged. */
export async function expectNoDuplicateRuns(pool: pg.Pool, log: RunLog, range: { first: string; last: string }): Promise<Map<string, number[]>> {
  const starts = log.starts();
  const { rows } = await pool.query<{ id: string; attempt: number }>(
    'select id, attempt from usher.executions where id between $1 and $2', [range.first, range.last]);
  const problems: string[] = [];
  for (const row of rows) {
    const attempts = starts.get(row.id) ?? [];
    if (new Set(attempts).size !== attempts.length) problems.push(`${row.id} started attempts ${attempts.join(',')}`);
    if (attempts.some((attempt) => attempt > row.attempt)) problems.push(`${row.id} ran attempt ${Math.max(...attempts)} > ${row.attempt}`);
  }
  expect(problems.slice(0, 10)).toEqual([]);
  return starts;
}
