// c.block: on attempts up to params.block_attempts (default 1) blocks the event loop for params.ms
// milliseconds (no timer, heartbeat or I/O runs meanwhile), then returns; later attempts return at once.
export default function block(params, ctx) {
  if (ctx.execution.attempt <= Number(params.block_attempts ?? 1)) {
    const end = performance.now() + Number(params.ms ?? 0);
    while (performance.now() < end) { /* hung */ }
  }
  return { attempt: ctx.execution.attempt, pid: process.pid };
}
