// t.flaky: throws a retryable error on its first params.fail_attempts attempts (by
// ctx.execution.attempt), then behaves like t.work (takes params.ms, returns n, pid and the attempt).
import work from './work.mjs';

export default async function flaky(params, ctx) {
  const failAttempts = Number(params.fail_attempts ?? 0);
  if (ctx.execution.attempt <= failAttempts) {
    throw new Error(`attempt ${ctx.execution.attempt} of ${failAttempts} failing on purpose`);
  }
  return { ...(await work(params, ctx)), attempt: ctx.execution.attempt };
}
