// c.work: t.work (takes params.ms, or CHAOS_MS_OVERRIDE, milliseconds unless aborted) that first
// records its start in CHAOS_RUN_LOG (a synchronous append, so it survives a SIGKILL right after)
// and returns its attempt and its clock as well. params.exit: ends the whole worker process at once
// instead (process.exit(1)), on every attempt: a poison head of its lane.
import { appendFileSync } from 'node:fs';
import work from '../../../packs/t/work.mjs';

export default async function chaosWork(params, ctx) {
  if (process.env.CHAOS_RUN_LOG) appendFileSync(process.env.CHAOS_RUN_LOG, `${ctx.execution.id} ${ctx.execution.attempt} ${process.pid}\n`);
  if (params.exit) process.exit(1);
  const { n } = await work({ ...params, ms: process.env.CHAOS_MS_OVERRIDE ?? params.ms ?? 0 }, ctx);
  return { n, attempt: ctx.execution.attempt, pid: process.pid, now: Date.now() };
}
