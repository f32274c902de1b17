/**
 * Cron schedules (usher.schedules): on each sweep an executor fires the schedules whose next tick
 * the database clock has passed. Postgres cannot parse cron, so the ticks are computed here and
 * handed to usher.fire_schedule, which enqueues them and moves the schedule on in one guarded
 * transaction; a unique index on (schedule_id, schedule_tick) backs it up. Any number of executors
 * may do this at once: a tick still becomes exactly one execution.
 *
 * Cron parsing is croner's: no dependencies, IANA time zones through Intl (with defined behaviour
 * across DST changes), 5-field, seconds and year fields, and nextRun/previousRuns to enumerate ticks
 * from any instant without running timers.
 */
import { Cron } from 'croner';
import type { Queryable } from '../db/pool.ts';
import type { Logger } from '../log.ts';

/** A schedule whose cron or timezone cannot be used. The message names the schedule; `reason` is without it. */
export class ScheduleError extends Error {
  readonly code = 'schedule_invalid';

  constructor(readonly scheduleRef: string, readonly field: 'cron' | 'timezone', readonly reason: string, options?: { cause?: unknown }) {
    super(`schedule ${scheduleRef}: ${reason}`, options);
    this.name = 'ScheduleError';
  }
}

/** Parses a schedule's cron expression, read in its time zone. Throws ScheduleError. */
export function parseSchedule(ref: string, cron: string, timezone: string): Cron {
  try {
    // croner only notices a bad zone when it first computes a date; check it up front.
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw new ScheduleError(ref, 'timezone', `unknown time zone ${JSON.stringify(timezone)} (Node.js has no such IANA zone)`);
  }
  try {
    // paused, with no function: croner only computes, it never starts a timer.
    return new Cron(cron.trim(), { timezone, paused: true });
  } catch (error) {
    // No cause: croner's message is all it has to say, and log lines would repeat it.
    throw new ScheduleError(ref, 'cron', `invalid cron expression ${JSON.stringify(cron)}: ${(error as Error).message}`);
  }
}

export interface DueTicks {
  /** The ticks to fire, oldest first: the latest due tick and up to max_backfill missed ones before it. */
  readonly fire: Date[];
  /** Due ticks too old to fire. */
  readonly skipped: number;
  /** False when there were too many due ticks to count them all: skipped is then a lower bound. */
  readonly skippedExact: boolean;
  readonly firstSkipped: Date | undefined;
  readonly lastSkipped: Date | undefined;
  /** The first tick after now: the schedule's new next_tick_at. Null when the cron has no further tick. */
  readonly next: Date | null;
}

/**
 * Walking ticks one by one costs tens of microseconds each; past this many (a seconds-level cron
 * after a long outage) the latest ones are taken straight from the cron and the count is a bound.
 */
const countLimit = 2000;

/**
 * The ticks due at `now` of a schedule whose next tick was `from`: every tick in [from, now].
 * The latest fires, with at most `maxBackfill` before it; the older ones are skipped.
 */
export function dueTicks(cron: Cron, from: Date, now: Date, maxBackfill: number): DueTicks {
  const keep = maxBackfill + 1;
  // The first tick at or after `from` (croner drops milliseconds, then looks strictly after):
  // `from` itself when the executor computed it, the next one when a person set it by hand.
  let tick = cron.nextRun(new Date(from.getTime() - 1));
  let recent: Date[] = [];
  let first: Date | undefined;
  let total = 0;
  while (tick !== null && tick <= now && total < countLimit) {
    first ??= tick;
    total += 1;
    recent.push(tick);
    // Keep one more than fires (the last skipped), trimmed in batches.
    if (recent.length > 2 * (keep + 1)) recent = recent.slice(-(keep + 1));
    tick = cron.nextRun(tick);
  }
  if (tick !== null && tick <= now) {
    const latest = cron.previousRuns(keep, new Date(now.getTime() + 1)).reverse();
    return {
      fire: latest,
      skipped: total + 1 - latest.length,
      skippedExact: false,
      firstSkipped: first,
      lastSkipped: latest[0] ? cron.previousRuns(1, latest[0])[0] : undefined,
      next: cron.nextRun(now),
    };
  }
  const fire = recent.slice(-keep);
  const skipped = total - fire.length;
  return {
    fire,
    skipped,
    skippedExact: true,
    firstSkipped: skipped > 0 ? first : undefined,
    lastSkipped: skipped > 0 ? recent[recent.length - keep - 1] : undefined,
    next: tick,
  };
}

interface DueScheduleRow {
  id: string;
  ref: string;
  cron: string;
  timezone: string;
  max_backfill: number;
  next_tick_at: Date | null;
  /** next_tick_at exactly as stored (microseconds), for the guard: a Date keeps only milliseconds. */
  seen_next_tick_at: string | null;
  now: Date;
}

interface FireRow {
  advanced: boolean;
  action_enabled: boolean | null;
  execution_ids: string[];
  ticks: Date[];
}

export interface FireSummary {
  /** Schedules that were due in this pass. */
  readonly due: number;
  /** Executions enqueued by this call. */
  readonly enqueued: number;
}

export interface FireOptions {
  /** The instant to fire up to; the database clock when absent (tests replay a past instant). */
  readonly now?: Date;
  /** Most schedules handled in one pass; the rest wait for the next (oldest due first). */
  readonly limit?: number;
}

/**
 * Fires every due schedule once: called from the executor's sweep loop. A schedule that fails
 * (bad cron, lost connection) is logged and left for later; the others still fire.
 */
export async function fireDueSchedules(db: Queryable, log: Logger, options: FireOptions = {}): Promise<FireSummary> {
  const { rows } = await db.query<DueScheduleRow>(
    `select s.id, s.ref, s.cron, s.timezone, s.max_backfill, s.next_tick_at, s.next_tick_at::text as seen_next_tick_at, c.now
     from (select coalesce($1::timestamptz, clock_timestamp()) as now) c
     join usher.schedules s
       on s.enabled and s.error is null and (s.next_tick_at is null or s.next_tick_at <= c.now)
     order by s.next_tick_at nulls first, s.id
     limit $2`,
    [options.now ?? null, options.limit ?? 100],
  );
  let enqueued = 0;
  for (const row of rows) {
    try {
      enqueued += await fireSchedule(db, log, row);
    } catch (error) {
      log.warn({ event: 'schedule:fire_failed', schedule: row.ref, schedule_id: row.id, err: error }, `schedule ${row.ref} could not fire; retrying next pass`);
    }
  }
  return { due: rows.length, enqueued };
}

async function fireSchedule(db: Queryable, log: Logger, row: DueScheduleRow): Promise<number> {
  let ticks: DueTicks;
  try {
    const cron = parseSchedule(row.ref, row.cron, row.timezone);
    ticks = row.next_tick_at === null
      // New, edited or re-enabled: start from now, without backfill.
      ? { fire: [], skipped: 0, skippedExact: true, firstSkipped: undefined, lastSkipped: undefined, next: cron.nextRun(row.now) }
      : dueTicks(cron, row.next_tick_at, row.now, row.max_backfill);
    if (ticks.next === null && ticks.fire.length === 0) {
      throw new ScheduleError(row.ref, 'cron', `cron expression ${JSON.stringify(row.cron)} has no tick after ${row.now.toISOString()}`);
    }
  } catch (error) {
    const invalid = error instanceof ScheduleError
      ? error
      : new ScheduleError(row.ref, 'cron', `cannot compute ticks of ${JSON.stringify(row.cron)} in ${row.timezone}: ${(error as Error).message}`);
    const marked = await db.query<{ marked: boolean }>(
      'select usher.mark_schedule_invalid($1, $2, $3, $4) as marked',
      [row.id, row.cron, row.timezone, invalid.message],
    );
    if (marked.rows[0]?.marked) {
      log.error({ event: 'schedule:invalid', schedule: row.ref, schedule_id: row.id, cron: row.cron, timezone: row.timezone, err: invalid },
        `${invalid.message}; skipped until its cron or timezone is changed`);
    }
    return 0;
  }

  const result = await db.query<FireRow>(
    'select * from usher.fire_schedule($1, $2::timestamptz, $3, $4, $5::timestamptz[], $6)',
    [row.id, row.seen_next_tick_at, row.cron, row.timezone, ticks.fire, ticks.next],
  );
  const fired = result.rows[0];
  const context = { schedule: row.ref, schedule_id: row.id };
  if (!fired?.advanced) {
    log.debug({ event: 'schedule:fire_lost', ...context }, 'another executor fired this schedule first');
    return 0;
  }
  if (row.next_tick_at === null) {
    log.info({ event: 'schedule:started', ...context, next_tick_at: ticks.next }, `schedule ${row.ref} first ticks at ${ticks.next?.toISOString()}`);
  }
  if (ticks.skipped > 0) {
    log.warn({
      event: 'schedule:ticks_skipped',
      ...context,
      skipped: ticks.skipped,
      skipped_exact: ticks.skippedExact,
      first_skipped: ticks.firstSkipped,
      last_skipped: ticks.lastSkipped,
      max_backfill: row.max_backfill,
    }, `${ticks.skippedExact ? '' : 'at least '}${ticks.skipped} missed ticks of ${row.ref} are older than max_backfill (${row.max_backfill}) allows and were skipped`);
  }
  if (fired.action_enabled === false && ticks.fire.length > 0) {
    log.warn({ event: 'schedule:ticks_dropped', ...context, ticks: ticks.fire, reason: 'action disabled' },
      `${ticks.fire.length} ticks of ${row.ref} did not fire: its action is disabled`);
  }
  if (fired.execution_ids.length > 0) {
    log.info({ event: 'schedule:fired', ...context, ticks: fired.ticks, execution_ids: fired.execution_ids }, `schedule ${row.ref} fired`);
  }
  if (fired.action_enabled && fired.execution_ids.length < ticks.fire.length) {
    log.warn({ event: 'schedule:ticks_existed', ...context, ticks: ticks.fire.filter((tick) => !fired.ticks.some((t) => t.getTime() === tick.getTime())) },
      'these ticks had already enqueued an execution; not enqueued again');
  }
  return fired.execution_ids.length;
}
