// soak.work: takes params.ms milliseconds, stopping early when aborted.
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
  return { n: params.n ?? null };
}
