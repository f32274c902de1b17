// c.work: records its start in CHAOS_RUN_LOG (a synchronous append, so it survives a SIGKILL right
// after), takes params.ms (or CHAOS_MS_OVERRIDE) milliseconds unless aborted, and returns what ran.
import { appendFileSync } from 'node:fs';

export default async function work(params, ctx) {
  if (process.env.CHAOS_RUN_LOG) appendFileSync(process.env.CHAOS_RUN_LOG, `${ctx.execution.id} ${ctx.execution.attempt} ${process.pid}\n`);
  const ms = Number(process.env.CHAOS_MS_OVERRIDE ?? params.ms ?? 0);
  if (ms > 0) {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      }, { once: true });
    });
  }
  return { n: params.n ?? null, attempt: ctx.execution.attempt, pid: process.pid, now: Date.now() };
}
