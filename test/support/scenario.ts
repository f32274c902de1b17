/** Setup and clean-up shared by the integration tests that drive real processes. */
import type pg from 'pg';
import { waitFor } from './wait.ts';
import type { UsherProcess } from './processes.ts';

export type Row = Record<string, any>;

/**
 * Makes `policyRef` the policy of `action` (any older one on the action is disabled). It groups by
 * params.lane, so each test's executions get a fresh lane of their own with its own counters.
 */
export async function usePolicy(pool: pg.Pool, action: string, policyRef: string, threshold: number): Promise<void> {
  await pool.query('update usher.policies set enabled = false where action_ref = $1', [action]);
  await pool.query(
    `insert into usher.policies (ref, action_ref, threshold, parameters) values ($1, $2, $3, '{lane}')`,
    [policyRef, action, threshold],
  );
}

/** After a failed test: ends whatever it left unfinished, so the next test starts from a quiet queue. */
export async function endLeftovers(pool: pg.Pool): Promise<void> {
  await pool.query(`
    update usher.executions
    set status = 'cancelled', result = '{"reason": "test cleanup"}', completed_at = clock_timestamp(),
      lease_token = null, lease_expires_at = null, updated_at = clock_timestamp()
    where status in ('requested', 'scheduled', 'running', 'canceling')`);
  await pool.query('update usher.lanes set active_count = 0 where active_count <> 0');
}

export function parseLine(line: string): Row | undefined {
  try {
    return JSON.parse(line) as Row;
  } catch {
    return undefined;
  }
}

/** The parsed log lines of one event from a process. */
export function events(proc: UsherProcess, event: string): Row[] {
  return proc.lines.map(parseLine).filter((entry): entry is Row => entry?.event === event);
}

/**
 * The log lines of an event once at least `count` of them have arrived: a worker logs an outcome
 * just after the database has it, so a test that saw the row must still wait for the line.
 */
export function eventsWhenLogged(proc: UsherProcess, event: string, count: number): Promise<Row[]> {
  return waitFor(() => {
    const found = events(proc, event);
    return found.length >= count ? found : undefined;
  }, { what: `${count} ${event} log lines`, timeoutMs: 10_000 });
}

export function workerIdOf(proc: UsherProcess): string {
  const line = events(proc, 'worker:started')[0];
  if (!line) throw new Error('worker has not logged worker:started');
  return String(line.worker_id);
}

/**
 * The most executions matching `where` (a condition on e) whose interval [from, to) was open at
 * one instant; an interval not yet closed counts as open. At equal times an end counts first.
 */
export async function maxOverlap(pool: pg.Pool, from: string, to: string, where: string, values: unknown[] = []): Promise<number> {
  const { rows } = await pool.query<{ max: number }>(
    `with mine as (select e.${from} as s, e.${to} as f from usher.executions e where ${where} and e.${from} is not null),
     edges as (
       select s as at, 1 as delta from mine
       union all
       select coalesce(f, 'infinity'), -1 from mine
     )
     select coalesce(max(open), 0)::int as max
     from (select sum(delta) over (order by at, delta rows between unbounded preceding and current row) as open from edges) x`,
    values,
  );
  return rows[0]!.max;
}
