/**
 * GET /api/v1/metrics (Prometheus text, prom-client). Queue gauges are read from the database at
 * scrape time, so every API instance reports the same values. Latency histograms and transition
 * counters come from the execution event log as this process follows it (EventFollower): they
 * count from this process's start, like any Prometheus counter, and every instance counts every
 * execution — aggregate them across instances with max(), not sum().
 */
import client from 'prom-client';
import type pg from 'pg';
import type { ExecutionEvent } from '../queue/events.ts';

export interface ApiMetrics {
  readonly registry: client.Registry;
  /** Reads the queue and worker gauges from the database; call before each scrape. */
  refresh(): Promise<void>;
  observe(events: readonly ExecutionEvent[]): void;
}

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

interface ActionCounts {
  action_ref: string;
  status: string | null;
  n: number;
  max_concurrent: number | null;
  oldest_waiting_seconds: number | null;
}

interface DatabaseHealth {
  oldest_snapshot_seconds: number;
  executions_dead_tuples: number;
  xid_age: number;
}

interface WorkerRow {
  name: string;
  host: string;
  heartbeat_age_seconds: number;
  running: number;
  concurrency: number;
}

export function createApiMetrics(pool: pg.Pool): ApiMetrics {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'usher_api_' });

  const executions = new client.Gauge({
    name: 'usher_executions', help: 'Executions in the table by action and status.',
    labelNames: ['action_ref', 'status'], registers: [registry],
  });
  const queueLength = new client.Gauge({
    name: 'usher_queue_length', help: 'Executions waiting in a lane for a slot (requested), per action.',
    labelNames: ['action_ref'], registers: [registry],
  });
  const activeSlots = new client.Gauge({
    name: 'usher_active_slots', help: 'Slots held (scheduled, running, canceling), per action.',
    labelNames: ['action_ref'], registers: [registry],
  });
  const maxConcurrent = new client.Gauge({
    name: 'usher_max_concurrent', help: 'Threshold of the policy governing new executions of the action (absent: no limit).',
    labelNames: ['action_ref'], registers: [registry],
  });
  const oldestWaiting = new client.Gauge({
    name: 'usher_oldest_waiting_seconds', help: 'Age of the oldest execution waiting in a lane, per action (0: none waiting).',
    labelNames: ['action_ref'], registers: [registry],
  });
  const heartbeatAge = new client.Gauge({
    name: 'usher_worker_heartbeat_age_seconds', help: 'Seconds since each active worker\'s last heartbeat, by the database clock.',
    labelNames: ['worker', 'host'], registers: [registry],
  });
  const workerRunning = new client.Gauge({
    name: 'usher_worker_running', help: 'Executions each active worker holds a lease on.',
    labelNames: ['worker', 'host'], registers: [registry],
  });
  const workerConcurrency = new client.Gauge({
    name: 'usher_worker_concurrency', help: 'Executions each active worker may run at once.',
    labelNames: ['worker', 'host'], registers: [registry],
  });
  const transitions = new client.Counter({
    name: 'usher_execution_transitions_total', help: 'Status changes seen in the event log since this process started, by action and new status.',
    labelNames: ['action_ref', 'status'], registers: [registry],
  });
  const admission = new client.Histogram({
    name: 'usher_admission_latency_seconds', help: 'Time an execution waited in its lane before it was admitted to a slot.',
    labelNames: ['action_ref'], buckets: latencyBuckets, registers: [registry],
  });
  const start = new client.Histogram({
    name: 'usher_start_latency_seconds', help: 'Time from admission until a worker claimed the execution.',
    labelNames: ['action_ref'], buckets: latencyBuckets, registers: [registry],
  });
  const run = new client.Histogram({
    name: 'usher_run_duration_seconds', help: 'Time from claim to the end of the attempt, by how it ended.',
    labelNames: ['action_ref', 'status'], buckets: latencyBuckets, registers: [registry],
  });

  // What keeps vacuum from cleaning the queue's table, and how close the database is to XID
  // wraparound: alert on these (a transaction holding a snapshot for minutes, dead tuples that keep
  // growing, an XID age past a few hundred million).
  const oldestSnapshot = new client.Gauge({
    name: 'usher_oldest_snapshot_seconds',
    help: 'Age of the oldest transaction in this database that holds a snapshot (backend_xmin): while it is open, vacuum keeps every row version newer than it. Sessions of other roles count only if the API\'s role has pg_read_all_stats.',
    registers: [registry],
  });
  const deadTuples = new client.Gauge({
    name: 'usher_executions_dead_tuples', help: 'Dead row versions in usher.executions not yet vacuumed (pg_stat_user_tables.n_dead_tup).', registers: [registry],
  });
  const xidAge = new client.Gauge({
    name: 'usher_database_xid_age', help: 'age(datfrozenxid) of this database: transactions until wraparound protection is 2^31 minus this.', registers: [registry],
  });

  const scrapeSeconds = new client.Gauge({
    name: 'usher_scrape_database_seconds', help: 'Time the last scrape spent reading the database.', registers: [registry],
  });

  // One read per scrape replaces every gauge value, so an action or worker that went away stops
  // being reported.
  async function refresh(): Promise<void> {
    const started = process.hrtime.bigint();
    const [actions, workers, health] = await Promise.all([readActionCounts(pool), readWorkers(pool), readDatabaseHealth(pool)]);
    for (const gauge of [executions, queueLength, activeSlots, maxConcurrent, oldestWaiting, heartbeatAge, workerRunning, workerConcurrency]) {
      gauge.reset();
    }
    for (const row of actions) {
      if (row.status !== null) executions.set({ action_ref: row.action_ref, status: row.status }, row.n);
    }
    const byAction = new Map<string, ActionCounts[]>();
    for (const row of actions) byAction.set(row.action_ref, [...(byAction.get(row.action_ref) ?? []), row]);
    for (const [ref, rows] of byAction) {
      const count = (statuses: string[]) => rows.filter((row) => row.status !== null && statuses.includes(row.status)).reduce((sum, row) => sum + row.n, 0);
      queueLength.set({ action_ref: ref }, count(['requested']));
      activeSlots.set({ action_ref: ref }, count(['scheduled', 'running', 'canceling']));
      oldestWaiting.set({ action_ref: ref }, rows[0]!.oldest_waiting_seconds ?? 0);
      if (rows[0]!.max_concurrent !== null) maxConcurrent.set({ action_ref: ref }, rows[0]!.max_concurrent);
    }
    for (const worker of workers) {
      const labels = { worker: worker.name, host: worker.host };
      heartbeatAge.set(labels, worker.heartbeat_age_seconds);
      workerRunning.set(labels, worker.running);
      workerConcurrency.set(labels, worker.concurrency);
    }
    oldestSnapshot.set(health.oldest_snapshot_seconds);
    deadTuples.set(health.executions_dead_tuples);
    xidAge.set(health.xid_age);
    scrapeSeconds.set(Number(process.hrtime.bigint() - started) / 1e9);
  }

  return {
    registry,
    refresh,
    observe(events) {
      for (const event of events) {
        transitions.inc({ action_ref: event.action_ref, status: event.status });
        if (event.elapsed_seconds === null) continue;
        const labels = { action_ref: event.action_ref };
        if (event.previous_status === 'running' || event.previous_status === 'canceling') {
          // An attempt ended: terminal, or requested (retry) / scheduled (handed back at shutdown).
          run.observe({ ...labels, status: event.status }, event.elapsed_seconds);
        } else if (event.status === 'scheduled') {
          admission.observe(labels, event.elapsed_seconds);
        } else if (event.status === 'running') {
          start.observe(labels, event.elapsed_seconds);
        }
      }
    },
  };
}

async function readActionCounts(pool: pg.Pool): Promise<ActionCounts[]> {
  // executions_by_action_status (action_ref, status) answers the counts from the index.
  const result = await pool.query<ActionCounts>(
    `select a.ref as action_ref, c.status, coalesce(c.n, 0)::float8 as n,
       (usher.effective_policy(a.ref)).threshold::float8 as max_concurrent,
       (select extract(epoch from clock_timestamp() - min(w.created_at))::float8
        from usher.executions w where w.action_ref = a.ref and w.status = 'requested') as oldest_waiting_seconds
     from usher.actions a
     left join lateral (
       select e.status, count(*) as n from usher.executions e where e.action_ref = a.ref group by e.status
     ) c on true
     order by a.ref, c.status`,
  );
  return result.rows;
}

async function readWorkers(pool: pg.Pool): Promise<WorkerRow[]> {
  const result = await pool.query<WorkerRow>(
    `select w.name, w.host, w.concurrency,
       extract(epoch from clock_timestamp() - w.heartbeat_at)::float8 as heartbeat_age_seconds,
       (select count(*) from usher.executions e where e.worker_id = w.id and e.status in ('running', 'canceling'))::float8 as running
     from usher.workers w
     where w.status = 'active'
     order by w.id`,
  );
  return result.rows;
}

async function readDatabaseHealth(pool: pg.Pool): Promise<DatabaseHealth> {
  const result = await pool.query<DatabaseHealth>(
    `select
       coalesce((select extract(epoch from max(clock_timestamp() - a.xact_start)) from pg_stat_activity a
                 where a.datname = current_database() and a.backend_xmin is not null and a.pid <> pg_backend_pid()), 0)::float8
         as oldest_snapshot_seconds,
       coalesce((select t.n_dead_tup from pg_stat_user_tables t where t.relid = 'usher.executions'::regclass), 0)::float8
         as executions_dead_tuples,
       (select age(d.datfrozenxid) from pg_database d where d.datname = current_database())::float8 as xid_age`,
  );
  return result.rows[0]!;
}
