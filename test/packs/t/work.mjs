// t.work: takes params.ms milliseconds (default 0), stopping early when aborted. Used for order and slot tests.
export default async function work(params, ctx) {
  const ms = Number(params.ms ?? 0);
  if (ms > 0) {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(ctx.signal.reason);
      }, { once: true });
    });
  }
  return { n: params.n ?? null, pid: process.pid };
}
