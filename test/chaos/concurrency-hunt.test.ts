/**
 * RELIABILITY T23: a model-based hunt for deadlocks and broken invariants. fast-check draws a
 * program of queue operations (enqueues, admission passes, claims, batched and single marks,
 * timeouts, heartbeats, hand-backs, postpones, cancels, lease sweeps, operator retries, lane,
 * action and pack pauses, unblocks, threshold changes, policies turned off and on, purges of an
 * action's queue, pruning) and
 * eight connections run their shares of it at once, each through the same call the product makes.
 * Every lane commit is audited (see `installAudit`); afterwards the queue is drained and checked
 * against what the calls answered.
 *
 * The seed is printed; `USHER_HUNT_SEED=<seed>` replays the same programs (the interleaving of the
 * connections is the machine's, so a failure may need a few replays).
 */
import fc from 'fast-check';
import type pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import * as executor from '../../src/queue/executor-calls.ts';
import { cancelExecution } from '../../src/queue/cancel.ts';
import { retryExecution } from '../../src/queue/retry.ts';
import type { ClaimedExecution } from '../../src/queue/types.ts';
import * as calls from '../../src/queue/worker-calls.ts';
import { waitFor } from '../support/wait.ts';
import { expectLaneOrder, expectSlotsHeldWithinBounds, FULL, scale, useChaosDatabase } from './support.ts';

const ACTIONS = ['h.lanes', 'h.block', 'h.rate', 'h.free'];
const THRESHOLDS: Record<string, number> = { 'hunt-lanes': 2, 'hunt-block': 1, 'hunt-rate': 3 };
const CONNECTIONS = 8;
const SEED = process.env.USHER_HUNT_SEED ? Number(process.env.USHER_HUNT_SEED) : FULL ? Date.now() % 2 ** 31 : 23;
const RUNS = scale(25, 300);
const COMMANDS = scale(200, 400);

const chaos = useChaosDatabase(`
  insert into usher.actions (ref, max_retries, retry_delay_seconds, retry_backoff_factor) values
    ('h.lanes', 1, 0.05, 1), ('h.block', 1, 0.05, 1), ('h.rate', 1, 0.05, 1), ('h.free', 1, 0.05, 1);
  insert into usher.policies (ref, action_ref, threshold, parameters, on_failure) values
    ('hunt-lanes', 'h.lanes', 2, '{lane}', 'wait'),
    ('hunt-block', 'h.block', 1, '{}', 'block');
  -- The rate-limited lanes also cancel what waited longer than a second (usher.cancel_overdue_waiting).
  insert into usher.policies (ref, action_ref, threshold, parameters, on_failure, rate_limit_max_executions, rate_limit_window_seconds, queue_timeout_seconds)
    values ('hunt-rate', 'h.rate', 3, '{lane}', 'skip', 20, 1, 1);`);

const OPS = {
  enqueue: 6, admit: 4, claim: 5, completeAndClaim: 4, complete: 3, fail: 2, timeOut: 1, heartbeat: 2, handBack: 1,
  postpone: 1, cancel: 2, expire: 2, retry: 1, pauseLane: 1, resumeLane: 1, pauseAction: 1, resumeAction: 1,
  pausePack: 1, resumePack: 1, unblock: 1, threshold: 1, togglePolicy: 1, prune: 1, sweeps: 1, purge: 1,
} as const;
type Op = keyof typeof OPS;

interface Command {
  op: Op;
  conn: number;
  pick: number;
  size: number;
  flag: boolean;
}

const command: fc.Arbitrary<Command> = fc.record({
  op: fc.oneof(...Object.entries(OPS).map(([op, weight]) => ({ arbitrary: fc.constant(op as Op), weight }))),
  conn: fc.nat({ max: CONNECTIONS - 1 }),
  pick: fc.nat({ max: 1_000_000 }),
  size: fc.integer({ min: 1, max: 4 }),
  flag: fc.boolean(),
});

/** What the program did, as the calls answered it. */
interface Run {
  ids: string[];
  /**
   * Leases held, and the connection that claimed each: only that connection marks it, as a
   * worker's marks of one lease never race each other. Heartbeats renew a worker's leases
   * whichever connection holds them, as a worker's heartbeat connection does.
   */
  held: Map<string, { claim: ClaimedExecution; conn: number }>;
  /** Every mark that answered `completed`: "id/attempt". */
  completed: string[];
  /** Operator retries that took, per execution (each may lead to one more ending). */
  retried: Map<string, number>;
  deadlocks: string[];
  unexpected: string[];
  counts: Record<string, number>;
}

let clients: pg.Client[] = [];
let workers: string[] = [];

beforeAll(async () => {
  for (let i = 0; i < CONNECTIONS; i += 1) {
    const client = await chaos.t.connect();
    // A deadlock is found in 100 ms instead of 1 s; a wait of 10 s is reported instead of hanging the run.
    await client.query(`set deadlock_timeout = '100ms'; set lock_timeout = '10s'`);
    clients.push(client);
  }
  const actions = ACTIONS.map((ref) => ({ ref }));
  workers = [
    await calls.registerWorker(chaos.t.pool, { name: 'hunt-a', host: 'test', pid: 1, concurrency: 50, actions }),
    await calls.registerWorker(chaos.t.pool, { name: 'hunt-b', host: 'test', pid: 2, concurrency: 50, actions }),
  ];
});
afterAll(() => {
  clients = [];
});

function pickOf<T>(items: readonly T[], pick: number): T | undefined {
  return items.length === 0 ? undefined : items[pick % items.length];
}

function heldPicks(run: Run, cmd: Command): ClaimedExecution[] {
  const held = [...run.held.values()].filter(({ conn }) => conn === cmd.conn).map(({ claim }) => claim);
  return Array.from({ length: Math.min(cmd.size, held.length) }, (_, i) => held[(cmd.pick + i * 7) % held.length]!)
    .filter((claim, i, all) => all.indexOf(claim) === i);
}

/** A mark's answer: the lease is gone either way once it answered (a status, or null when lost). */
function marked(run: Run, claim: ClaimedExecution, status: string | null): void {
  // The execution may have been claimed again (a later attempt) since this lease was picked.
  if (run.held.get(claim.id)?.claim.lease_token === claim.lease_token) run.held.delete(claim.id);
  if (status === 'completed') run.completed.push(`${claim.id}/${claim.attempt}`);
}

const PRODUCERS_TURN = 23;

/** `usher.release_due_delayed`, in turn with the producers (see enqueue). */
async function releaseDueDelayedInTurn(db: pg.Client): Promise<void> {
  await db.query(`begin; select pg_advisory_xact_lock(${PRODUCERS_TURN})`);
  await executor.releaseDueDelayed(db).finally(() => db.query('commit'));
}

const LANE_AT = `(select lane_key from usher.lanes order by lane_key offset $1 limit 1)`;

async function perform(db: pg.Client, run: Run, cmd: Command): Promise<void> {
  const worker = workers[cmd.conn % workers.length]!;
  switch (cmd.op) {
    case 'enqueue': {
      const action = ACTIONS[cmd.pick % ACTIONS.length]!;
      // FIFO is the order of ids among committed rows: two producers whose transactions overlap may
      // commit in the other order, and the later id is then rightly admitted first. The hunt's
      // producers take turns (with the release of delayed starts, which take their place in a lane
      // from the same sequence), so its order check can be exact.
      await db.query(`begin; select pg_advisory_xact_lock(${PRODUCERS_TURN})`);
      const { rows } = await db.query<{ id: string }>(
        `insert into usher.executions (action_ref, params, run_at)
         select $1, jsonb_build_object('lane', $2::text), case when $4 then clock_timestamp() + interval '50 ms' end
         from generate_series(1, $3) returning id`,
        [action, `l${cmd.pick % 3}`, cmd.size, cmd.flag && cmd.pick % 4 === 0]).finally(() => db.query('commit'));
      run.ids.push(...rows.map((row) => row.id));
      return;
    }
    case 'admit':
      await executor.admitQueued(db);
      return;
    case 'claim':
      for (const claim of await calls.claimScheduled(db, worker, ACTIONS, cmd.size, cmd.flag ? 1 : 30)) run.held.set(claim.id, { claim, conn: cmd.conn });
      return;
    case 'completeAndClaim': {
      const picks = heldPicks(run, cmd);
      const { statuses, claims } = await calls.completeAndClaim(db, picks.map((claim) => ({ claim, resultJson: '{}' })),
        { workerId: worker, actionRefs: ACTIONS, limit: cmd.flag ? cmd.size : 0, leaseSeconds: 30 });
      picks.forEach((claim, i) => marked(run, claim, statuses[i]!));
      for (const claim of claims) run.held.set(claim.id, { claim, conn: cmd.conn });
      return;
    }
    case 'complete':
    case 'fail':
    case 'timeOut':
    case 'handBack':
    case 'postpone': {
      const claim = heldPicks(run, cmd)[0];
      if (!claim) return;
      const status = cmd.op === 'complete' ? await calls.completeExecution(db, claim, '{}')
        : cmd.op === 'fail' ? await calls.failExecution(db, claim, 'hunt', null, cmd.flag)
        : cmd.op === 'timeOut' ? await calls.timeOutExecution(db, claim, 'hunt')
        : cmd.op === 'handBack' ? await calls.handBackExecution(db, claim)
        : await calls.postponeExecution(db, claim, new Date(Date.now() + 100), 'hunt');
      marked(run, claim, status);
      return;
    }
    case 'heartbeat': {
      const leases = [...run.held.values()].filter(({ conn }) => conn % workers.length === cmd.conn % workers.length).map(({ claim }) => claim);
      await calls.heartbeatWorker(db, worker, leases, 30);
      return;
    }
    case 'cancel': {
      const id = pickOf(run.ids, cmd.pick);
      if (!id) return;
      try {
        await cancelExecution(db, id, 'hunt');
      } catch (error) {
        // Pruned meanwhile: the one answer allowed besides a status.
        if ((error as { code?: string }).code !== 'execution_not_found') throw error;
      }
      return;
    }
    case 'expire':
      await executor.expireRunningExecutions(db, 0);
      return;
    case 'retry': {
      const id = pickOf(run.ids, cmd.pick);
      if (id && (await retryExecution(db, id)).outcome === 'retried') run.retried.set(id, (run.retried.get(id) ?? 0) + 1);
      return;
    }
    case 'pauseLane':
      await db.query(`select usher.pause_lane(l, clock_timestamp() + interval '150 ms', 'hunt') from ${LANE_AT} s(l)`, [cmd.pick % 8]);
      return;
    case 'resumeLane':
      await db.query(`select usher.resume_lane(l) from ${LANE_AT} s(l)`, [cmd.pick % 8]);
      return;
    case 'unblock':
      await db.query(`select usher.unblock_lane(l) from ${LANE_AT} s(l)`, [cmd.pick % 8]);
      return;
    case 'pauseAction':
      await db.query('select usher.pause_action($1, $2)', [ACTIONS[cmd.pick % ACTIONS.length], 'hunt']);
      return;
    case 'resumeAction':
      await db.query('select usher.resume_action($1)', [ACTIONS[cmd.pick % ACTIONS.length]]);
      return;
    case 'pausePack':
      await db.query(`select usher.pause_pack('h', 'hunt')`);
      return;
    case 'resumePack':
      await db.query(`select usher.resume_pack('h')`);
      return;
    case 'togglePolicy':
      // A disabled policy's lanes drain without a limit; its action's new executions need no slot.
      await db.query('update usher.policies set enabled = not enabled where ref = $1', [Object.keys(THRESHOLDS)[cmd.pick % 3]]);
      return;
    case 'threshold': {
      const ref = Object.keys(THRESHOLDS)[cmd.pick % 3]!;
      await db.query('update usher.policies set threshold = $2 where ref = $1', [ref, cmd.pick % 4]);
      return;
    }
    case 'purge':
      // An operator emptying an action's queue, a small batch at a time (usher.cancel_waiting).
      await db.query('select usher.cancel_waiting($1, $2, $3)', [ACTIONS[cmd.pick % ACTIONS.length], 'hunt', cmd.size]);
      return;
    case 'prune':
      await executor.deleteFinishedExecutions(db, 0, 20);
      await executor.deleteIdleLanes(db, 0);
      return;
    case 'sweeps':
      await releaseDueDelayedInTurn(db);
      await executor.cancelOverdueWaiting(db);
      await db.query('select usher.sequence_execution_events(100)');
      return;
  }
}

async function runThread(db: pg.Client, run: Run, commands: Command[]): Promise<void> {
  for (const cmd of commands) {
    try {
      await perform(db, run, cmd);
      run.counts[cmd.op] = (run.counts[cmd.op] ?? 0) + 1;
    } catch (error) {
      const { code, message } = error as { code?: string; message: string };
      (code === '40P01' ? run.deadlocks : run.unexpected).push(`${cmd.op}: ${code ?? ''} ${message}`);
    }
  }
}

/** Lifts every pause, block and threshold change, then admits, claims and completes until nothing is left unfinished. */
async function drain(run: Run): Promise<void> {
  const pool = chaos.t.pool;
  await pool.query(`select usher.resume_action(ref) from usher.actions where ref = any($1)`, [ACTIONS]);
  await pool.query(`select usher.resume_pack('h')`);
  await pool.query(`select usher.resume_lane(lane_key) from usher.lanes where paused_until is not null`);
  for (const [ref, threshold] of Object.entries(THRESHOLDS)) {
    await pool.query('update usher.policies set threshold = $2, enabled = true where ref = $1', [ref, threshold]);
  }
  const started = Date.now();
  let reportedSlow = false;
  await waitFor(async () => {
    if (!reportedSlow && Date.now() - started > 5_000) {
      // A drain normally takes a few passes. One that waits is most likely waiting for a lease to
      // expire (30 s): say which, for the next reader, without failing the run on that alone.
      reportedSlow = true;
      console.warn(`concurrency hunt: drain still waiting after 5 s: ${await runningAgainstBooks(run)}`);
    }
    for (const { claim } of [...run.held.values()]) marked(run, claim, await calls.completeExecution(pool, claim, '{}'));
    await pool.query('select usher.unblock_lane(lane_key) from usher.lanes where blocked_by is not null');
    await releaseDueDelayedInTurn(clients[0]!);
    await executor.admitQueued(pool);
    await executor.expireRunningExecutions(pool, 0);
    for (const claim of await calls.claimScheduled(pool, workers[0]!, ACTIONS, 100, 30)) run.held.set(claim.id, { claim, conn: 0 });
    if (run.held.size > 0) return false;
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from usher.executions where status in ('delayed', 'requested', 'scheduled', 'running', 'canceling')`);
    return rows[0]!.n === 0;
  }, { what: 'the queue drained', timeoutMs: 60_000, intervalMs: 20 }).catch(async (error: unknown) => {
    // What is stuck, and the state of its lane, so a failure can be read without a replay.
    const { rows } = await pool.query(`
      select e.id, e.action_ref, e.status, e.lane_key, e.queue_position, e.run_at, e.attempt, to_jsonb(l) as lane,
        (select to_jsonb(p) from usher.lane_policy(e.lane_key) p) as policy
      from usher.executions e left join usher.lanes l on l.lane_key = e.lane_key
      where e.status in ('delayed', 'requested', 'scheduled', 'running', 'canceling') order by e.id limit 5`);
    throw new Error(`${(error as Error).message}; ${run.held.size} leases held; unfinished: ${JSON.stringify(rows)}; ${await runningAgainstBooks(run)}`);
  });
}

/**
 * Running rows against the leases the hunt's books hold (a lease they do not hold can only end by
 * expiring), the last endings, and the program's errors.
 */
async function runningAgainstBooks(run: Run): Promise<string> {
  const pool = chaos.t.pool;
  const { rows: running } = await pool.query<{ id: string; lease_token: string }>(
    `select id, status, lane_key, lease_token, attempt, worker_id, lease_expires_at, started_at from usher.executions
     where status in ('running', 'canceling') order by id`);
  const leases = running.map((row) => ({ ...row, held_by_books: run.held.get(row.id)?.claim.lease_token === row.lease_token }));
  const { rows: endings } = await pool.query(`select id, status, attempt, worker_id from public.chaos_endings order by seq desc limit 8`);
  return `running: ${JSON.stringify(leases)}; last endings: ${JSON.stringify(endings)}; errors in the program: ${JSON.stringify([...run.deadlocks, ...run.unexpected])}`;
}

async function check(run: Run): Promise<void> {
  const pool = chaos.t.pool;
  const q = async (sql: string, values: unknown[] = []) => (await pool.query(sql, values)).rows;
  expect(run.deadlocks, 'deadlocks').toEqual([]);
  expect(run.unexpected, 'errors').toEqual([]);
  expect(await q('select * from usher.check_invariants()')).toEqual([]);
  expect(await q('select lane_key, active_count from usher.lanes where active_count <> 0')).toEqual([]);
  if (run.ids.length === 0) return;
  const range = { first: run.ids.reduce((a, b) => (BigInt(a) < BigInt(b) ? a : b)), last: run.ids.reduce((a, b) => (BigInt(a) > BigInt(b) ? a : b)) };
  await expectSlotsHeldWithinBounds(pool, range);
  await expectLaneOrder(pool, range, [...run.retried.keys()]);
  // A lease completes once: no two marks answered `completed` for the same attempt…
  expect(run.completed.filter((key, i) => run.completed.indexOf(key) !== i), 'attempts completed twice').toEqual([]);
  // …each of them is an ending the table recorded, and an execution ended once, plus once per
  // operator retry (a retry of one cancelled before it ran is charged no attempt, so the count is per execution).
  const endings = await q(`select id, attempt, status from public.chaos_endings where id between $1 and $2`, [range.first, range.last]);
  const endedAs = new Map<string, string[]>();
  for (const { id, attempt, status } of endings) endedAs.set(`${id}/${attempt}`, [...(endedAs.get(`${id}/${attempt}`) ?? []), status]);
  expect(run.completed.filter((key) => !(endedAs.get(key) ?? []).includes('completed')), 'completions the table did not record').toEqual([]);
  const endingsOf = new Map<string, number>();
  for (const { id } of endings) endingsOf.set(id, (endingsOf.get(id) ?? 0) + 1);
  expect([...endingsOf].filter(([id, n]) => n > 1 + (run.retried.get(id) ?? 0)), 'executions ended more often than retried').toEqual([]);
  // Nothing disappears but what ended (pruned).
  const present = new Set((await q('select id from usher.executions where id = any($1)', [run.ids])).map((row) => row.id as string));
  const endedIds = new Set(endingsOf.keys());
  expect(run.ids.filter((id) => !present.has(id) && !endedIds.has(id)), 'executions lost').toEqual([]);
}

it(`finds no deadlock and no broken invariant in ${RUNS} programs of ${COMMANDS} operations on ${CONNECTIONS} connections (seed ${SEED})`, { timeout: scale(240_000, 1_200_000) }, async () => {
  console.log(`concurrency hunt: seed ${SEED} (replay with USHER_HUNT_SEED=${SEED})`);
  const totals: Record<string, number> = {};
  let executions = 0;
  let completedDuringPrograms = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(command, { minLength: COMMANDS, maxLength: COMMANDS }), async (program) => {
      const run: Run = { ids: [], held: new Map(), completed: [], retried: new Map(), deadlocks: [], unexpected: [], counts: {} };
      await Promise.all(clients.map((client, index) => runThread(client, run, program.filter((cmd) => cmd.conn === index))));
      completedDuringPrograms += run.completed.length;
      await drain(run);
      await check(run);
      for (const [op, n] of Object.entries(run.counts)) totals[op] = (totals[op] ?? 0) + n;
      executions += run.ids.length;
    }),
    {
      seed: SEED, numRuns: RUNS, endOnFailure: true,
      // The program itself is hundreds of commands: report where to replay it and why it failed.
      asyncReporter: async (details) => {
        if (details.failed) {
          throw new Error(`program ${details.numRuns} of seed ${details.seed} failed (USHER_HUNT_SEED=${details.seed})`, { cause: details.errorInstance });
        }
      },
    },
  );
  console.log(`concurrency hunt: ${executions} executions, ${completedDuringPrograms} completed by the programs' own marks; operations run: ${JSON.stringify(totals)}`);
  // The hunt must have exercised the paths it is about.
  expect(executions).toBeGreaterThan(RUNS * 10);
  expect(completedDuringPrograms).toBeGreaterThan(RUNS);
  for (const op of Object.keys(OPS)) {
    expect(totals[op] ?? 0, op).toBeGreaterThan(0);
  }
});
