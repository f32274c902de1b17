// c.noisy: writes params.mb megabytes to stdout and to its log before returning, in 64 kB lines.
export default async function noisy(params, ctx) {
  const line = 'y'.repeat(64 * 1024);
  const lines = Math.round((Number(params.mb ?? 1) * 1024 * 1024) / line.length);
  for (let i = 0; i < lines; i += 1) {
    if (i % 2 === 0) console.log(line);
    else ctx.log.info({ event: 'noisy:line', line }, 'noise');
  }
  return { lines };
}
