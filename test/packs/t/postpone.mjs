// t.postpone: the first time this worker process runs an execution with params.pause_ms, it calls
// ctx.pauseLaneUntil(now + pause_ms, params.reason ?? 'upstream 429') (an upstream limit); every
// other run behaves like t.work. A postponement charges no attempt, so ctx.execution.attempt cannot
// tell the first run from the second: the process remembers which executions it postponed.
import work from './work.mjs';

const postponed = new Set();

export default async function postpone(params, ctx) {
  if (params.pause_ms !== undefined && !postponed.has(ctx.execution.id)) {
    postponed.add(ctx.execution.id);
    ctx.pauseLaneUntil(new Date(Date.now() + Number(params.pause_ms)), params.reason ?? 'upstream 429');
  }
  return { ...(await work(params, ctx)), attempt: ctx.execution.attempt };
}
