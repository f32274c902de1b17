/**
 * Cron schedules: tick arithmetic, the guarded SQL transition (replayed at fixed past instants so
 * every count is exact), and real `usher executor` processes firing a schedule every second. Every
 * wait is on a database condition or a log line.
 */
import type pg from 'pg';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dueTicks, fireDueSchedules, parseSchedule, ScheduleError } from '../../src/executor/schedules.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { killAll, startExecutor, startWorker } from '../support/processes.ts';
import { endLeftovers, events, type Row } from '../support/scenario.ts';
import { waitFor } from '../support/wait.ts';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
  await t.pool.query(`insert into usher.actions (ref) values ('t.work'), ('t.other') on conflict do nothing`);
});

afterEach(async () => {
  await killAll();
  await t.pool.query('delete from usher.schedules');
  await t.pool.query(`update usher.actions set enabled = true where ref in ('t.work', 't.other')`);
  await endLeftovers(t.pool);
});

afterAll(() => t.drop());

async function q<T extends Row = Row>(sql: string, values: unknown[] = []): Promise<T[]> {
  return (await t.pool.query<T>(sql, values)).rows;
}

async function sqlError(sql: string, values: unknown[] = []): Promise<pg.DatabaseError> {
  const error = await t.pool.query(sql, values).then(() => undefined, (e: unknown) => e);
  expect(error, `expected ${sql} to fail`).toBeDefined();
  return error as pg.DatabaseError;
}

/** A logger whose JSON lines the test can read, for fireDueSchedules called in-process. */
function captureLog(): { log: pino.Logger; lines: Row[]; of(event: string): Row[] } {
  const lines: Row[] = [];
  const log = pino({ level: 'debug', base: {}, messageKey: 'msg' }, { write: (line: string) => { lines.push(JSON.parse(line) as Row); } });
  return { log, lines, of: (event) => lines.filter((line) => line.event === event) };
}

async function createSchedule(values: Row): Promise<Row> {
  const columns = Object.keys(values);
  const rows = await q(
    `insert into usher.schedules (${columns.join(', ')}) values (${columns.map((_, i) => `$${i + 1}`).join(', ')}) returning *`,
    Object.values(values).map((value) => (value !== null && typeof value === 'object' && !(value instanceof Date) ? JSON.stringify(value) : value)),
  );
  return rows[0]!;
}

async function schedule(ref: string): Promise<Row> {
  return (await q('select * from usher.schedules where ref = $1', [ref]))[0]!;
}

async function ticksOf(scheduleId: string): Promise<string[]> {
  const rows = await q<{ tick: Date }>('select schedule_tick as tick from usher.executions where schedule_id = $1 order by schedule_tick, id', [scheduleId]);
  return rows.map((row) => row.tick.toISOString());
}

const utc = (iso: string) => new Date(iso);
const isoList = (dates: readonly (Date | undefined)[]) => dates.map((date) => date?.toISOString());

describe('tick computation', () => {
  const everySecond = parseSchedule('s', '* * * * * *', 'UTC');

  it('fires the tick that is due, and names the next one', () => {
    const due = dueTicks(everySecond, utc('2030-01-01T00:00:00Z'), utc('2030-01-01T00:00:00.400Z'), 1);
    expect(isoList(due.fire)).toEqual(['2030-01-01T00:00:00.000Z']);
    expect(due).toMatchObject({ skipped: 0, skippedExact: true, firstSkipped: undefined, lastSkipped: undefined });
    expect(due.next?.toISOString()).toBe('2030-01-01T00:00:01.000Z');
  });

  it('after downtime fires the latest due tick and at most max_backfill before it, and counts the rest as skipped', () => {
    const due = dueTicks(everySecond, utc('2030-01-01T00:00:00Z'), utc('2030-01-01T00:00:10.500Z'), 2);
    expect(isoList(due.fire)).toEqual(['2030-01-01T00:00:08.000Z', '2030-01-01T00:00:09.000Z', '2030-01-01T00:00:10.000Z']);
    expect(due).toMatchObject({ skipped: 8, skippedExact: true });
    expect(isoList([due.firstSkipped, due.lastSkipped, due.next ?? undefined]))
      .toEqual(['2030-01-01T00:00:00.000Z', '2030-01-01T00:00:07.000Z', '2030-01-01T00:00:11.000Z']);

    const none = dueTicks(everySecond, utc('2030-01-01T00:00:00Z'), utc('2030-01-01T00:00:10.500Z'), 0);
    expect(isoList(none.fire)).toEqual(['2030-01-01T00:00:10.000Z']);
    expect(none.skipped).toBe(10);

    // A tick exactly at now is due; a hand-set next_tick_at between ticks starts at the next tick.
    const exact = dueTicks(everySecond, utc('2030-01-01T00:00:00.250Z'), utc('2030-01-01T00:00:02Z'), 5);
    expect(isoList(exact.fire)).toEqual(['2030-01-01T00:00:01.000Z', '2030-01-01T00:00:02.000Z']);
    expect(exact.skipped).toBe(0);
  });

  it('does not walk a day of seconds: past the count limit the skipped count is a lower bound', () => {
    const due = dueTicks(everySecond, utc('2030-01-01T00:00:00Z'), utc('2030-01-02T00:00:00.700Z'), 1);
    expect(isoList(due.fire)).toEqual(['2030-01-01T23:59:59.000Z', '2030-01-02T00:00:00.000Z']);
    expect(due).toMatchObject({ skipped: 1999, skippedExact: false });
    expect(isoList([due.firstSkipped, due.lastSkipped, due.next ?? undefined]))
      .toEqual(['2030-01-01T00:00:00.000Z', '2030-01-01T23:59:58.000Z', '2030-01-02T00:00:01.000Z']);
  });

  it('reads cron fields in the schedule time zone, across DST changes', () => {
    const paris = parseSchedule('paris', '0 0 9 * * *', 'Europe/Paris');
    // Summer time starts on 2030-03-31: 09:00 in Paris is 08:00 UTC before, 07:00 UTC after.
    const due = dueTicks(paris, utc('2030-03-30T08:00:00Z'), utc('2030-03-31T12:00:00Z'), 5);
    expect(isoList(due.fire)).toEqual(['2030-03-30T08:00:00.000Z', '2030-03-31T07:00:00.000Z']);
    expect(due.next?.toISOString()).toBe('2030-04-01T07:00:00.000Z');
    // 02:30 does not exist in New York on 2030-03-10: that day it runs when the clock has jumped.
    const newYork = parseSchedule('ny', '30 2 * * *', 'America/New_York');
    expect(isoList(newYork.nextRuns(2, utc('2030-03-09T12:00:00Z')))).toEqual(['2030-03-10T07:00:00.000Z', '2030-03-11T06:30:00.000Z']);
  });

  it('rejects a bad cron expression or time zone with an error that names the schedule', () => {
    const bad = (cron: string, timezone = 'UTC') => {
      try {
        parseSchedule('nightly', cron, timezone);
      } catch (error) {
        expect(error).toBeInstanceOf(ScheduleError);
        expect((error as ScheduleError).code).toBe('schedule_invalid');
        expect((error as ScheduleError).scheduleRef).toBe('nightly');
        return (error as Error).message;
      }
      throw new Error(`${cron} in ${timezone} was accepted`);
    };
    expect(bad('61 * * * * *')).toBe('schedule nightly: invalid cron expression "61 * * * * *": CronPattern: Invalid value for second: 61');
    expect(bad('* * * *')).toBe(
      `schedule nightly: invalid cron expression "* * * *": CronPattern: invalid configuration format ('* * * *'), exactly five, six, or seven space separated parts are required.`,
    );
    expect(bad('0 3 * * *', 'Mars/Olympus')).toBe('schedule nightly: unknown time zone "Mars/Olympus" (Node.js has no such IANA zone)');
  });
});

describe('usher.schedules and usher.fire_schedule, replayed at fixed instants', () => {
  it('validates at insert: time zone, cron shape, params, max_backfill, action', async () => {
    let error = await sqlError(`insert into usher.schedules (ref, action_ref, cron, timezone) values ('bad-tz', 't.work', '0 3 * * *', 'Mars/Olympus')`);
    expect([error.message, error.code, error.constraint, error.hint]).toEqual([
      `usher.schedules: schedule 'bad-tz': unknown time zone 'Mars/Olympus'`,
      '23514',
      'schedules_timezone_known',
      'Use an IANA time zone name from pg_timezone_names, such as UTC or Europe/Paris.',
    ]);
    await createSchedule({ ref: 'ok-tz', action_ref: 't.work', cron: '0 3 * * *', timezone: 'Europe/Paris' });
    error = await sqlError(`update usher.schedules set timezone = 'Europe/Pariss' where ref = 'ok-tz'`);
    expect([error.message, error.constraint]).toEqual([`usher.schedules: schedule 'ok-tz': unknown time zone 'Europe/Pariss'`, 'schedules_timezone_known']);

    error = await sqlError(`insert into usher.schedules (ref, action_ref, cron) values ('words', 't.work', 'every minute')`);
    expect(error.constraint).toBe('schedules_cron_shape');
    error = await sqlError(`insert into usher.schedules (ref, action_ref, cron, params) values ('arr', 't.work', '@hourly', '[]')`);
    expect(error.constraint).toBe('schedules_params_is_object');
    error = await sqlError(`insert into usher.schedules (ref, action_ref, cron, max_backfill) values ('neg', 't.work', '@hourly', -1)`);
    expect(error.constraint).toBe('schedules_max_backfill_range');
    error = await sqlError(`insert into usher.schedules (ref, action_ref, cron) values ('ghost', 't.ghost', '@hourly')`);
    expect(error.constraint).toBe('schedules_action_ref_fkey');
    error = await sqlError(`insert into usher.schedules (ref, action_ref, cron) values ('Upper Case', 't.work', '@hourly')`);
    expect(error.constraint).toBe('schedules_ref_format');
  });

  it('a new schedule starts at its next tick without backfill; a late pass fires the latest tick and max_backfill before it, logs the skipped ones, and moves on', async () => {
    const { log, of } = captureLog();
    const s = await createSchedule({ ref: 'replay', action_ref: 't.work', cron: '* * * * * *', params: { n: 'replay' }, max_backfill: 3 });
    expect([s.next_tick_at, s.last_tick_at, s.error]).toEqual([null, null, null]);

    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:00.300Z') })).toEqual({ due: 1, enqueued: 0 });
    expect(await schedule('replay')).toMatchObject({ next_tick_at: utc('2020-01-01T00:00:01Z'), last_tick_at: null });
    expect(of('schedule:started')).toMatchObject([{ schedule: 'replay', next_tick_at: '2020-01-01T00:00:01.000Z' }]);

    // Nothing due yet.
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:00.900Z') })).toEqual({ due: 0, enqueued: 0 });

    // On time: exactly the one tick.
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:01.200Z') })).toEqual({ due: 1, enqueued: 1 });
    expect(await ticksOf(s.id)).toEqual(['2020-01-01T00:00:01.000Z']);

    // Down from 00:00:01.2 to 00:00:20.5: ticks 2..20 are due; 17, 18, 19 (max_backfill 3) and 20 fire.
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:20.500Z') })).toEqual({ due: 1, enqueued: 4 });
    expect(await ticksOf(s.id)).toEqual([
      '2020-01-01T00:00:01.000Z', '2020-01-01T00:00:17.000Z', '2020-01-01T00:00:18.000Z', '2020-01-01T00:00:19.000Z', '2020-01-01T00:00:20.000Z',
    ]);
    expect(await schedule('replay')).toMatchObject({ next_tick_at: utc('2020-01-01T00:00:21Z'), last_tick_at: utc('2020-01-01T00:00:20Z') });
    expect(of('schedule:ticks_skipped')).toMatchObject([{
      schedule: 'replay',
      schedule_id: s.id,
      skipped: 15,
      skipped_exact: true,
      first_skipped: '2020-01-01T00:00:02.000Z',
      last_skipped: '2020-01-01T00:00:16.000Z',
      max_backfill: 3,
      level: 40,
    }]);
    const fired = of('schedule:fired');
    expect(fired.map((line) => line.ticks)).toEqual([
      ['2020-01-01T00:00:01.000Z'],
      ['2020-01-01T00:00:17.000Z', '2020-01-01T00:00:18.000Z', '2020-01-01T00:00:19.000Z', '2020-01-01T00:00:20.000Z'],
    ]);
    // Ordinary executions: the schedule's params, no policy so admitted at once, ids in tick order.
    const rows = await q(`select id, action_ref, params, status, schedule_id from usher.executions where schedule_id = $1 order by schedule_tick`, [s.id]);
    expect(rows.map((row) => row.id)).toEqual(fired.flatMap((line) => line.execution_ids));
    expect([...rows.map((row) => row.id)].sort((a, b) => Number(a) - Number(b))).toEqual(rows.map((row) => row.id));
    for (const row of rows) expect(row).toMatchObject({ action_ref: 't.work', params: { n: 'replay' }, status: 'scheduled', schedule_id: s.id });
  });

  it('fires a tick once when several executors race for it, and the unique index refuses a tick fired again by hand', async () => {
    const { log, of } = captureLog();
    const s = await createSchedule({
      ref: 'race', action_ref: 't.work', cron: '*/5 * * * * *', max_backfill: 10, next_tick_at: '2020-01-01T00:00:00Z',
    });
    const now = utc('2020-01-01T00:00:12Z');
    const results = await Promise.all(Array.from({ length: 6 }, () => fireDueSchedules(t.pool, log, { now })));
    expect(results.map((result) => result.enqueued).sort()).toEqual([0, 0, 0, 0, 0, 3]);
    expect(await ticksOf(s.id)).toEqual(['2020-01-01T00:00:00.000Z', '2020-01-01T00:00:05.000Z', '2020-01-01T00:00:10.000Z']);
    expect(of('schedule:fired')).toHaveLength(1);
    expect(of('schedule:fire_lost').length).toBe(results.filter((result) => result.due === 1 && result.enqueued === 0).length);

    // Someone winds next_tick_at back: the same ticks come due again, and none is enqueued twice.
    await t.pool.query(`update usher.schedules set next_tick_at = '2020-01-01T00:00:05Z' where id = $1`, [s.id]);
    expect(await fireDueSchedules(t.pool, log, { now })).toEqual({ due: 1, enqueued: 0 });
    expect(await ticksOf(s.id)).toEqual(['2020-01-01T00:00:00.000Z', '2020-01-01T00:00:05.000Z', '2020-01-01T00:00:10.000Z']);
    expect(of('schedule:ticks_existed')).toMatchObject([{ schedule: 'race', ticks: ['2020-01-01T00:00:05.000Z', '2020-01-01T00:00:10.000Z'] }]);
    expect(await schedule('race')).toMatchObject({ next_tick_at: utc('2020-01-01T00:00:15Z'), last_tick_at: utc('2020-01-01T00:00:10Z') });

    // A next_tick_at set by hand with microseconds still matches the guard (it is compared as stored).
    await t.pool.query(`update usher.schedules set next_tick_at = '2020-01-01T00:00:12.345678Z' where id = $1`, [s.id]);
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:16Z') })).toEqual({ due: 1, enqueued: 1 });
    expect((await ticksOf(s.id)).at(-1)).toBe('2020-01-01T00:00:15.000Z');
  });

  it('skips disabled schedules, restarts a re-enabled or edited one from now, and passes over ticks of a disabled action', async () => {
    const { log, of } = captureLog();
    const off = await createSchedule({ ref: 'off', action_ref: 't.work', cron: '* * * * * *', enabled: false, next_tick_at: '2020-01-01T00:00:00Z' });
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:05Z') })).toEqual({ due: 0, enqueued: 0 });
    expect(await ticksOf(off.id)).toEqual([]);

    // Enabled again: the time it was off is not backfilled.
    await t.pool.query(`update usher.schedules set enabled = true where id = $1`, [off.id]);
    expect(await schedule('off')).toMatchObject({ enabled: true, next_tick_at: null });
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:05.500Z') })).toEqual({ due: 1, enqueued: 0 });
    expect(await schedule('off')).toMatchObject({ next_tick_at: utc('2020-01-01T00:00:06Z') });

    // A new cron starts afresh too.
    await t.pool.query(`update usher.schedules set cron = '0 * * * * *' where id = $1`, [off.id]);
    expect(await schedule('off')).toMatchObject({ next_tick_at: null });
    await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:06.500Z') });
    expect(await schedule('off')).toMatchObject({ next_tick_at: utc('2020-01-01T00:01:00Z') });

    // Action disabled: its ticks pass without executions (and without failing every pass).
    await t.pool.query(`update usher.actions set enabled = false where ref = 't.work'`);
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:01:00.100Z') })).toEqual({ due: 1, enqueued: 0 });
    expect(await ticksOf(off.id)).toEqual([]);
    expect(await schedule('off')).toMatchObject({ next_tick_at: utc('2020-01-01T00:02:00Z'), last_tick_at: utc('2020-01-01T00:01:00Z') });
    expect(of('schedule:ticks_dropped')).toMatchObject([{ schedule: 'off', ticks: ['2020-01-01T00:01:00.000Z'], reason: 'action disabled' }]);
    await t.pool.query(`update usher.actions set enabled = true where ref = 't.work'`);
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:02:00.100Z') })).toEqual({ due: 1, enqueued: 1 });
    expect(await ticksOf(off.id)).toEqual(['2020-01-01T00:02:00.000Z']);
  });

  it('records an unusable cron once, keeps firing the other schedules, and forgets the error when the cron is edited', async () => {
    const { log, of } = captureLog();
    const bad = await createSchedule({ ref: 'bad-cron', action_ref: 't.work', cron: '61 * * * * *', next_tick_at: '2020-01-01T00:00:00Z' });
    const never = await createSchedule({ ref: 'feb-30', action_ref: 't.work', cron: '0 0 0 30 2 *' });
    const factory = await createSchedule({ ref: 'factory-tz', action_ref: 't.work', cron: '@hourly', timezone: 'Factory' });
    const good = await createSchedule({ ref: 'good', action_ref: 't.other', cron: '* * * * * *', next_tick_at: '2020-01-01T00:00:00Z' });

    const now = utc('2020-01-01T00:00:00.500Z');
    const results = await Promise.all([fireDueSchedules(t.pool, log, { now }), fireDueSchedules(t.pool, log, { now })]);
    expect(results.map((result) => result.enqueued).sort()).toEqual([0, 1]);
    expect(await ticksOf(good.id)).toEqual(['2020-01-01T00:00:00.000Z']);

    const rows = await q(`select ref, error, next_tick_at from usher.schedules where ref <> 'good' order by ref`);
    expect(rows).toEqual([
      { ref: 'bad-cron', error: 'schedule bad-cron: invalid cron expression "61 * * * * *": CronPattern: Invalid value for second: 61', next_tick_at: null },
      { ref: 'factory-tz', error: 'schedule factory-tz: unknown time zone "Factory" (Node.js has no such IANA zone)', next_tick_at: null },
      { ref: 'feb-30', error: 'schedule feb-30: cron expression "0 0 0 30 2 *" has no tick after 2020-01-01T00:00:00.500Z', next_tick_at: null },
    ]);
    // Logged by the one pass that recorded it, not by every pass.
    expect(of('schedule:invalid').map((line) => [line.schedule, line.level]).sort()).toEqual([['bad-cron', 50], ['factory-tz', 50], ['feb-30', 50]]);
    expect(await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:01.500Z') })).toEqual({ due: 1, enqueued: 1 });
    expect(of('schedule:invalid')).toHaveLength(3);
    for (const id of [bad.id, never.id, factory.id]) expect(await ticksOf(id)).toEqual([]);

    await t.pool.query(`update usher.schedules set cron = '*/2 * * * * *' where id = $1`, [bad.id]);
    expect(await schedule('bad-cron')).toMatchObject({ error: null, next_tick_at: null });
    await fireDueSchedules(t.pool, log, { now: utc('2020-01-01T00:00:02.500Z') });
    expect(await schedule('bad-cron')).toMatchObject({ error: null, next_tick_at: utc('2020-01-01T00:00:04Z') });
  });
});

describe('executors firing schedules', () => {
  it('two executors, a schedule every second: exactly one execution per tick, consecutive ticks, none twice', async () => {
    const s = await createSchedule({ ref: 'every-second', action_ref: 't.work', cron: '* * * * * *', params: { n: 'cron' }, max_backfill: 5 });
    const executors = [await startExecutor(t.url), await startExecutor(t.url)];
    const worker = await startWorker(t.url, { concurrency: 4, name: 'cron-runner' });

    await waitFor(async () => (await ticksOf(s.id)).length >= 6, { what: '6 ticks of every-second', timeoutMs: 30_000 });
    // Stop both executors (gracefully: a fire in flight commits or rolls back whole) and look at what they left.
    for (const executor of executors) executor.kill('SIGTERM');
    expect((await Promise.all(executors.map((executor) => executor.exited))).map((exit) => exit.code)).toEqual([0, 0]);

    const executions = await q<{ id: string; tick: Date; created_at: Date }>(
      'select id, schedule_tick as tick, created_at from usher.executions where schedule_id = $1 order by schedule_tick',
      [s.id],
    );
    const ticks = executions.map((row) => row.tick.getTime());
    expect(ticks.length).toBeGreaterThanOrEqual(6);
    expect(new Set(ticks).size).toBe(ticks.length);
    // Consecutive: one every second from the first to the last, none missing.
    expect(ticks).toEqual(ticks.map((_, i) => ticks[0]! + i * 1000));
    // A new schedule is not backfilled: its first tick comes after it was created.
    expect(ticks[0]).toBeGreaterThan(s.created_at.getTime());
    // Enqueued at or after its tick, never before (the database clock decides what is due).
    for (const row of executions) expect(row.created_at.getTime()).toBeGreaterThanOrEqual(row.tick.getTime());
    expect(await schedule('every-second')).toMatchObject({
      last_tick_at: new Date(ticks.at(-1)!),
      next_tick_at: new Date(ticks.at(-1)! + 1000),
      error: null,
    });

    // The two executors' logs together name every tick and every execution once.
    const fired = executors.flatMap((executor) => events(executor, 'schedule:fired'));
    expect(fired.flatMap((line) => line.ticks).map((tick: string) => Date.parse(tick)).sort((a: number, b: number) => a - b)).toEqual(ticks);
    expect(fired.flatMap((line) => line.execution_ids).sort()).toEqual(executions.map((row) => row.id).sort());
    expect(executors.flatMap((executor) => events(executor, 'schedule:started'))).toHaveLength(1);
    expect(executors.flatMap((executor) => [...events(executor, 'schedule:ticks_skipped'), ...events(executor, 'schedule:fire_failed')])).toEqual([]);

    // And they are ordinary executions: the worker runs each one.
    const done = await waitFor(async () => {
      const rows = await q(`select status, result from usher.executions where schedule_id = $1 order by schedule_tick`, [s.id]);
      return rows.every((row) => row.status === 'completed') ? rows : undefined;
    }, { what: 'every scheduled execution to complete' });
    expect(done).toEqual(executions.map(() => ({ status: 'completed', result: { n: 'cron', pid: worker.child.pid } })));
  });

  it('after downtime fires the latest tick and max_backfill missed ones, and logs how many it skipped', async () => {
    // A yearly schedule whose executors were last up in 2018: its 2019 tick and every one since are due.
    const [{ year }] = await q<{ year: number }>(`select extract(year from now() at time zone 'UTC')::int as year`) as [{ year: number }];
    const s = await createSchedule({
      ref: 'yearly', action_ref: 't.work', cron: '@yearly', max_backfill: 2,
      last_tick_at: '2018-01-01T00:00:00Z', next_tick_at: '2019-01-01T00:00:00Z',
    });
    const executor = await startExecutor(t.url);
    const fired = await executor.waitForEvent('schedule:fired');
    const expected = [year - 2, year - 1, year].map((y) => `${y}-01-01T00:00:00.000Z`);
    expect(fired).toMatchObject({ schedule: 'yearly', schedule_id: s.id, ticks: expected });
    expect(await ticksOf(s.id)).toEqual(expected);
    expect(await schedule('yearly')).toMatchObject({
      last_tick_at: new Date(`${year}-01-01T00:00:00Z`),
      next_tick_at: new Date(`${year + 1}-01-01T00:00:00Z`),
    });
    expect(events(executor, 'schedule:ticks_skipped')).toMatchObject([{
      schedule: 'yearly',
      skipped: year - 2 - 2019,
      skipped_exact: true,
      first_skipped: '2019-01-01T00:00:00.000Z',
      last_skipped: `${year - 3}-01-01T00:00:00.000Z`,
      max_backfill: 2,
      level: 'warn',
    }]);
  });

  it('an unusable cron is logged and skipped while the other schedules keep firing; a disabled one never fires', async () => {
    const bad = await createSchedule({ ref: 'bad-cron', action_ref: 't.work', cron: '* * 25 * * *' });
    const off = await createSchedule({ ref: 'off', action_ref: 't.work', cron: '* * * * * *', enabled: false });
    const good = await createSchedule({ ref: 'good', action_ref: 't.other', cron: '* * * * * *', max_backfill: 5 });
    const executor = await startExecutor(t.url);

    // Three ticks of the good one means many sweeps (every 200 ms) have passed over the other two.
    await waitFor(async () => (await ticksOf(good.id)).length >= 3, { what: '3 ticks of good' });
    expect(await ticksOf(bad.id)).toEqual([]);
    expect(await ticksOf(off.id)).toEqual([]);
    const message = 'schedule bad-cron: invalid cron expression "* * 25 * * *": CronPattern: Invalid value for hour: 25';
    expect(await q(`select ref, error, next_tick_at from usher.schedules order by ref`)).toEqual([
      { ref: 'bad-cron', error: message, next_tick_at: null },
      { ref: 'good', error: null, next_tick_at: expect.any(Date) },
      { ref: 'off', error: null, next_tick_at: null },
    ]);
    expect(events(executor, 'schedule:invalid')).toMatchObject([{
      level: 'error', schedule: 'bad-cron', schedule_id: bad.id, cron: '* * 25 * * *', timezone: 'UTC', err: { type: 'ScheduleError', message },
    }]);
    expect(executor.child.exitCode).toBeNull();
  });
});
