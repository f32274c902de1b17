/**
 * GET /executions/stream against real worker and executor processes: a connected client sees every
 * transition in log order, a reconnecting client continues exactly after its Last-Event-ID, filters
 * narrow the stream, and retention gaps are announced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, WRITE_TOKEN, READ_TOKEN, type TestApi } from '../support/api.ts';
import { killAll, startExecutor, startWorker } from '../support/processes.ts';
import { usePolicy } from '../support/scenario.ts';
import { openEventStream, type SseConnection, type SseEvent } from '../support/sse.ts';
import { waitFor } from '../support/wait.ts';

let api: TestApi;
const auth = { authorization: `Bearer ${READ_TOKEN}` };

beforeAll(async () => {
  api = await startTestApi();
  await Promise.all([startWorker(api.t.url, { concurrency: 8 }), startExecutor(api.t.url)]);
  await usePolicy(api.t.pool, 't.work', 'stream-five', 5);
});
afterAll(async () => {
  await killAll();
  await api.close();
});

interface Data { position: string; execution_id: string; action_ref: string; status: string; previous_status: string | null }
const executionEvents = (connection: SseConnection) => connection.events.filter((event) => event.event === 'execution');
const dataOf = (event: SseEvent) => JSON.parse(event.data) as Data;

async function enqueue(action: string, count: number, lane: string): Promise<string[]> {
  const { rows } = await api.t.pool.query<{ id: string }>(
    `insert into usher.executions (action_ref, params) select $1, jsonb_build_object('n', g, 'lane', $3::text)
     from generate_series(1, $2) g returning id`, [action, count, lane]);
  return rows.map((row) => row.id);
}

async function allEnded(ids: string[]): Promise<boolean> {
  const { rows } = await api.t.pool.query<{ n: number }>(
    `select count(*)::int as n from usher.executions where id = any($1::bigint[]) and status = 'completed'`, [ids]);
  return rows[0]!.n === ids.length;
}

/** The log as the database has it after `after`, for these executions. */
async function logOf(ids: string[], after: string) {
  const { rows } = await api.t.pool.query<{ position: string; execution_id: string; status: string }>(
    `select e.position::text, e.execution_id::text, e.status from usher.execution_events e
     where e.position > $1 and e.execution_id = any($2::bigint[]) order by e.position`, [after, ids]);
  return rows;
}

describe('GET /executions/stream', () => {
  it('shows a connected client every transition of 500 executions, in log order, each execution in its own order', async () => {
    const stream = await openEventStream(`${api.base}/executions/stream`, auth);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const ids = await enqueue('t.work', 500, 'sse-all');
    await waitFor(() => allEnded(ids), { timeoutMs: 90_000, what: '500 executions completed' });
    await waitFor(() => executionEvents(stream).length >= 2000, { timeoutMs: 30_000, what: '2000 events on the stream' });
    stream.close();

    const received = executionEvents(stream).map(dataOf);
    expect(received).toHaveLength(2000);
    // Event ids are the log positions: consecutive, no gap, no repeat.
    const first = Number(received[0]!.position);
    expect(received.map((event) => Number(event.position))).toEqual(received.map((_, index) => first + index));
    expect(executionEvents(stream).map((event) => event.id)).toEqual(received.map((event) => event.position));
    const byExecution = new Map<string, string[]>();
    for (const event of received) byExecution.set(event.execution_id, [...(byExecution.get(event.execution_id) ?? []), `${event.previous_status}>${event.status}`]);
    expect([...byExecution.keys()].sort()).toEqual([...ids].sort());
    for (const transitions of byExecution.values()) {
      expect(transitions).toEqual(['null>requested', 'requested>scheduled', 'scheduled>running', 'running>completed']);
    }
    const log = await logOf(ids, String(first - 1));
    expect(received.map(({ position, execution_id, status }) => ({ position, execution_id, status }))).toEqual(log);
  });

  it('continues after Last-Event-ID: a client that reconnects gets exactly what it missed', async () => {
    const firstConnection = await openEventStream(`${api.base}/executions/stream`, auth);
    const ids = await enqueue('t.work', 200, 'sse-resume');
    await waitFor(() => executionEvents(firstConnection).length >= 100, { what: '100 events before the disconnect' });
    firstConnection.close();
    await firstConnection.ended;
    const seenBefore = executionEvents(firstConnection).map(dataOf);
    const lastId = executionEvents(firstConnection).at(-1)!.id!;

    ids.push(...await enqueue('t.work', 100, 'sse-resume'));
    await waitFor(() => allEnded(ids), { timeoutMs: 60_000, what: '300 executions completed' });
    // The API sequences the last changes into the log shortly after they commit.
    const log = await waitFor(async () => {
      const rows = await logOf(ids, String(Number(seenBefore[0]!.position) - 1));
      return rows.length === 1200 && rows;
    }, { what: 'all 1200 changes in the log' });

    const resumed = await openEventStream(`${api.base}/executions/stream`, { ...auth, 'Last-Event-ID': lastId });
    await waitFor(() => executionEvents(resumed).some((event) => event.id === log.at(-1)!.position), { what: 'the resumed stream reaching the end of the log' });
    resumed.close();
    const seenAfter = executionEvents(resumed).map(dataOf).filter((event) => Number(event.position) <= Number(log.at(-1)!.position));
    expect(Number(seenAfter[0]!.position)).toBe(Number(lastId) + 1);
    const together = [...seenBefore, ...seenAfter].map(({ position, execution_id, status }) => ({ position, execution_id, status }));
    expect(together).toEqual(log);
  });

  it('narrows to one action, or to the actions of a pack', async () => {
    const before = (await api.t.pool.query<{ last: string }>('select last_position::text as last from usher.execution_event_sequencer')).rows[0]!.last;
    const onlyOther = await openEventStream(`${api.base}/executions/stream?action_ref=t.other&last_event_id=${before}`, auth);
    const wholePack = await openEventStream(`${api.base}/executions/stream?action_ref=t.*&last_event_id=${before}`, auth);
    const work = await enqueue('t.work', 3, 'sse-filter');
    const other = await enqueue('t.other', 2, 'sse-filter');
    await waitFor(() => allEnded([...work, ...other]), { what: 'filtered executions completed' });
    // t.other has no policy: admitted on insert, so three changes each; t.work waits in its lane first.
    await waitFor(() => executionEvents(wholePack).length >= 18 && executionEvents(onlyOther).length >= 6, { what: 'filtered events' });
    onlyOther.close();
    wholePack.close();
    expect(new Set(executionEvents(onlyOther).map((event) => dataOf(event).execution_id))).toEqual(new Set(other));
    expect(executionEvents(onlyOther).map((event) => dataOf(event).status).sort()).toEqual(['completed', 'completed', 'running', 'running', 'scheduled', 'scheduled']);
    expect(new Set(executionEvents(wholePack).map((event) => dataOf(event).execution_id))).toEqual(new Set([...work, ...other]));
    expect(executionEvents(wholePack)).toHaveLength(18);
  });

  it('announces a gap when the events after the client\'s id were deleted by retention', async () => {
    const { rows } = await api.t.pool.query<{ first: string }>('select min(position)::text as first from usher.execution_events');
    await api.t.pool.query('delete from usher.execution_events where position < $1::bigint + 10', [rows[0]!.first]);
    const stream = await openEventStream(`${api.base}/executions/stream?last_event_id=0`, auth);
    await waitFor(() => stream.events.length > 1, { what: 'the gap and the first kept event' });
    stream.close();
    expect(stream.events[0]).toEqual({
      id: undefined, event: 'gap', data: JSON.stringify({ after: '0', first_available: String(Number(rows[0]!.first) + 10) }),
    });
    expect(stream.events[1]!.id).toBe(String(Number(rows[0]!.first) + 10));
  });

  it('refuses a Last-Event-ID that is not an event id with a 400 naming the header', async () => {
    const res = await api.request('GET', '/executions/stream', { headers: { 'Last-Event-ID': "1'; drop table usher.executions;--" } });
    expect(res.status).toBe(400);
    expect(res.body.error.details).toEqual([{ location: 'header', field: 'last-event-id', message: expect.stringContaining('event id') }]);
  });

  it('listens, and watches for completions, only while a stream is open: no NOTIFY wakes the API otherwise', async () => {
    // Application names of this database's sessions: LISTEN connections, and those watching completions.
    const sessions = async () => {
      const { rows } = await api.t.pool.query<{ application_name: string; watching: boolean }>(
        `select a.application_name, exists (
           select 1 from pg_locks l where l.pid = a.pid and l.locktype = 'advisory' and l.granted
             and l.classid = 29298 and l.objid = 0 and l.objsubid = 1) as watching
         from pg_stat_activity a
         where a.datname = current_database() and a.application_name like 'usher-api-events:%'`);
      return rows;
    };
    // The stream of the test before stopped its listener as it closed; that connection ends a moment later.
    await waitFor(async () => (await sessions()).length === 0, { what: 'no listener once no stream is open' });
    const first = await openEventStream(`${api.base}/executions/stream`, auth);
    const second = await openEventStream(`${api.base}/executions/stream`, auth);
    await waitFor(async () => (await sessions()).some((row) => row.watching), { what: 'the API to watch for completions' });
    expect(await sessions()).toEqual([{ application_name: expect.stringMatching(/^usher-api-events:\d+$/), watching: true }]);
    const closedStreams = () => api.logs.filter((line) => line.event === 'stream:closed').length;
    const closedBefore = closedStreams();
    first.close();
    await waitFor(() => closedStreams() === closedBefore + 1, { what: 'the API to end the first stream' });
    expect(await sessions()).toEqual([{ application_name: expect.stringMatching(/^usher-api-events:\d+$/), watching: true }]);
    second.close();
    await waitFor(async () => (await sessions()).length === 0, { what: 'the API to stop listening' });
  });

  it('ends open streams when the server closes', async () => {
    const other = await startTestApi({ database: api.t });
    const stream = await openEventStream(`${other.base}/executions/stream`, { authorization: `Bearer ${WRITE_TOKEN}` });
    expect(stream.status).toBe(200);
    await other.server.close();
    await stream.ended;
    expect(stream.events.filter((event) => event.event !== 'execution')).toEqual([]);
  });
});
