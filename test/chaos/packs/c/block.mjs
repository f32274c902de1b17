// c.block: on attempts up to params.block_attempts (default 1) blocks the event loop for params.ms
// milliseconds (no timer, heartbeat or I/O runs meanwhile), then returns; later attempts return at once.
// With params.until_file it returns as soon as that file exists, params.ms being the cap: a test
// decides when the hung worker wakes, whatever the machine's load.
import { existsSync } from 'node:fs';

export default function block(params, ctx) {
  if (ctx.execution.attempt <= Number(params.block_attempts ?? 1)) {
    const end = performance.now() + Number(params.ms ?? 0);
    while (performance.now() < end) {
      if (params.until_file && existsSync(params.until_file)) break;
    }
  }
  return { attempt: ctx.execution.attempt, pid: process.pid };
}
