/**
 * `npm run bench:quick`: the CI guard. Asserts Usher's worker round trips per execution (stable
 * counts, not times) and runs Usher's scenarios at small counts as a smoke test of the harness.
 * Exits non-zero when a count is over its bound.
 */
import { dropDatabase } from './db.ts';
import { cases, measureRoundTrips } from './round-trips.ts';

const started = performance.now();
let failed = false;
console.log('| case | executions | worker statements | per execution | bound | statements by function |');
console.log('| --- | ---: | ---: | ---: | ---: | --- |');
for (const testCase of cases) {
  const result = await measureRoundTrips(testCase);
  const over = result.perExecution > result.maxPerExecution;
  failed ||= over;
  const kinds = Object.entries(result.byKind).map(([kind, n]) => `${kind} ${n}`).join(', ');
  console.log(`| ${result.name} | ${result.total} | ${result.statements} | ${result.perExecution.toFixed(3)} | ≤ ${result.maxPerExecution}${over ? ' **OVER**' : ''} | ${kinds} |`);
}
await dropDatabase('bench_usher');
console.log(`\nround trips checked in ${((performance.now() - started) / 1000).toFixed(1)} s`);
if (failed) {
  console.error('bench:quick: a case sends more statements per execution than its bound');
  process.exit(1);
}
