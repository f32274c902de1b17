// c.big: returns a result of params.mb megabytes.
export default async function big(params) {
  return { blob: 'x'.repeat(Math.round(Number(params.mb ?? 1) * 1024 * 1024)) };
}
