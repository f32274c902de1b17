/**
 * GET /metrics: queue and worker gauges read at scrape time, and latency histograms fed by the
 * event log, checked value by value after a known sequence of transitions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { admitQueued } from '../../src/queue/executor-calls.ts';
import { READ_TOKEN, startTestApi, type TestApi } from '../support/api.ts';
import { claimOne, completeClaimed, registerTestWorker } from '../support/queue-states.ts';
import { waitFor } from '../support/wait.ts';

let api: TestApi;
let workerId: string;

beforeAll(async () => {
  api = await startTestApi();
  await api.t.pool.query(`
    insert into usher.actions (ref) values ('m.lim'), ('m.free');
    insert into usher.policies (ref, action_ref, threshold) values ('m-two', 'm.lim', 2);`);
  workerId = await registerTestWorker(api.t.pool, 'metrics-worker', ['m.lim', 'm.free']);
});
afterAll(() => api.close());

/** Samples of the exposition: `name{labels}` → value. */
async function scrape(): Promise<Map<string, number>> {
  const res = await api.request('GET', '/metrics', { token: READ_TOKEN });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  const samples = new Map<string, number>();
  for (const line of String(res.body).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

describe('GET /metrics', () => {
  it('reports executions by action and status, queue length, slots and thresholds, and workers', async () => {
    await api.t.pool.query(`insert into usher.executions (action_ref, params) select 'm.lim', '{}' from generate_series(1, 5)`);
    await api.t.pool.query(`insert into usher.executions (action_ref, params) values ('m.free', '{}')`);
    await admitQueued(api.t.pool);
    await claimOne(api.t.pool, workerId, 'm.lim');

    const samples = await scrape();
    const usher = [...samples].filter(([name]) => /^usher_(executions|queue_length|active_slots|max_concurrent)\{/.test(name));
    expect(Object.fromEntries(usher)).toEqual({
      'usher_executions{action_ref="m.free",status="scheduled"}': 1,
      'usher_executions{action_ref="m.lim",status="requested"}': 3,
      'usher_executions{action_ref="m.lim",status="running"}': 1,
      'usher_executions{action_ref="m.lim",status="scheduled"}': 1,
      'usher_queue_length{action_ref="m.free"}': 0,
      'usher_queue_length{action_ref="m.lim"}': 3,
      'usher_active_slots{action_ref="m.free"}': 1,
      'usher_active_slots{action_ref="m.lim"}': 2,
      'usher_max_concurrent{action_ref="m.lim"}': 2,
    });
    expect(samples.get('usher_worker_running{worker="metrics-worker",host="test-host"}')).toBe(1);
    expect(samples.get('usher_worker_concurrency{worker="metrics-worker",host="test-host"}')).toBe(4);
    expect(samples.get('usher_worker_heartbeat_age_seconds{worker="metrics-worker",host="test-host"}')).toBeGreaterThanOrEqual(0);
    expect(samples.get('usher_oldest_waiting_seconds{action_ref="m.lim"}')).toBeGreaterThan(0);
    expect(samples.get('usher_oldest_waiting_seconds{action_ref="m.free"}')).toBe(0);
    expect(samples.has('usher_api_process_resident_memory_bytes')).toBe(true);
  });

  it('counts transitions and observes admission, start and run latencies from the event log', async () => {
    const count = (samples: Map<string, number>, name: string) => samples.get(name) ?? 0;
    // The claim of the test before has reached the metrics: nothing older is still on its way.
    const before = await waitFor(async () => {
      const samples = await scrape();
      return count(samples, 'usher_execution_transitions_total{action_ref="m.lim",status="running"}') === 1 && samples;
    }, { what: 'the earlier claim in the metrics' });
    const claim = await claimOne(api.t.pool, workerId, 'm.lim');
    // Completing frees a slot: the next waiting execution is admitted in the same transaction.
    await completeClaimed(api.t.pool, claim, { ok: true });

    const after = await waitFor(async () => {
      const samples = await scrape();
      return count(samples, 'usher_run_duration_seconds_count{action_ref="m.lim",status="completed"}') > count(before, 'usher_run_duration_seconds_count{action_ref="m.lim",status="completed"}') && samples;
    }, { what: 'the completion in the metrics' });
    const delta = (name: string) => count(after, name) - count(before, name);
    expect(delta('usher_run_duration_seconds_count{action_ref="m.lim",status="completed"}')).toBe(1);
    expect(delta('usher_start_latency_seconds_count{action_ref="m.lim"}')).toBe(1);
    expect(delta('usher_admission_latency_seconds_count{action_ref="m.lim"}')).toBe(1);
    expect(delta('usher_execution_transitions_total{action_ref="m.lim",status="running"}')).toBe(1);
    expect(delta('usher_execution_transitions_total{action_ref="m.lim",status="completed"}')).toBe(1);
    expect(delta('usher_execution_transitions_total{action_ref="m.lim",status="scheduled"}')).toBe(1);
    // Buckets are cumulative: the +Inf bucket holds every observation.
    expect(delta('usher_start_latency_seconds_bucket{le="+Inf",action_ref="m.lim"}')).toBe(1);
  });
});
