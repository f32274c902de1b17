// bench.noop for `usher worker` in scenario 9: does nothing, so the worker's own memory shows.
export default async function noop() {
  return null;
}
