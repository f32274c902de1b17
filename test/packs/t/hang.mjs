// t.hang: never settles and ignores its abort signal: a handler that is stuck for good.
export default function hang() {
  return new Promise(() => {});
}
