/** Worker processes for the HTTP API: usher.workers with the age of their last heartbeat and what they run now. */
import type { Queryable } from '../db/pool.ts';
import { selectPage, SqlValues, type PageOf, type PageRequest } from './paging.ts';

export type WorkerStatus = 'active' | 'stopped' | 'lost';

export interface WorkerRecord {
  id: string;
  name: string;
  host: string;
  pid: number;
  status: WorkerStatus;
  actions: string[];
  concurrency: number;
  started_at: Date;
  heartbeat_at: Date;
  stopped_at: Date | null;
  /** Seconds since heartbeat_at, by the database clock. */
  heartbeat_age_seconds: number;
  /** Executions it holds a lease on now (running or canceling). */
  running_count: number;
}

/** Workers newest first; `status` narrows to active, stopped or lost ones. */
export function listWorkers(db: Queryable, filter: { status?: WorkerStatus }, page: PageRequest): Promise<PageOf<WorkerRecord>> {
  const sql = new SqlValues();
  const where = filter.status === undefined ? [] : [`w.status = ${sql.add(filter.status)}`];
  // The running count reads the small partial index of executions that hold a lease.
  return selectPage<WorkerRecord>(db, {
    select: `w.id, w.name, w.host, w.pid, w.status, w.actions, w.concurrency, w.started_at, w.heartbeat_at, w.stopped_at,
      round(extract(epoch from clock_timestamp() - w.heartbeat_at)::numeric, 3)::float8 as heartbeat_age_seconds,
      (select count(*) from usher.executions e
       where e.worker_id = w.id and e.status in ('running', 'canceling'))::float8 as running_count`,
    from: 'usher.workers w',
    alias: 'w',
    where,
    sql,
    page,
    order: (alias) => `${alias}.id desc`,
  });
}
