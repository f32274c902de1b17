// demo.fail: always throws, to show what a failed execution looks like.
export const description = 'Always fails with params.message';

export default async function fail(params) {
  throw new Error(String(params.message ?? 'demo.fail failed as asked'));
}
