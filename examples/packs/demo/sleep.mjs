// demo.sleep: waits params.ms milliseconds (default 1000), giving up early when aborted.
export const description = 'Sleeps for params.ms milliseconds; stops early on cancel or timeout';
export const timeout_seconds = 60;

export default async function sleep(params, ctx) {
  const ms = Number(params.ms ?? 1000);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    ctx.signal.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(ctx.signal.reason);
    }, { once: true });
  });
  return { slept_ms: ms };
}
