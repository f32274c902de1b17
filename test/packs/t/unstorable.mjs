// t.unstorable: returns what cannot be stored as JSON: a cycle, a BigInt, or a NUL character.
export default async function unstorable(params) {
  if (params.kind === 'bigint') return { big: 10n };
  if (params.kind === 'nul') return { text: 'a\u0000b' };
  const cycle = { name: 'cycle' };
  cycle.self = cycle;
  return cycle;
}
