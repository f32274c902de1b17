/**
 * The side-by-side benchmark: `npm run bench` (full) or `npm run bench:quick` (small counts).
 * Options: --quick, --repeats N, --only s1,s2,…, --systems usher,graphile-worker,…, --out DIR,
 * --merge (keep the other scenarios of DIR/benchmarks.json, replace the ones run now; each
 * scenario's table then names the run it comes from), --report (render DIR/benchmarks.json again, run nothing).
 * Writes DIR/benchmarks.json, DIR/benchmarks.md (tables) and DIR/benchmarks.svg (ratios).
 */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { allConfigs } from './adapters/index.ts';
import { dropDatabase, serverInfo } from './db.ts';
import { markdown, svgChart, type RunMeta } from './report.ts';
import { bulkThroughput } from './scenarios/s1-throughput.ts';
import { strictFifo } from './scenarios/s2-fifo.ts';
import { thresholdN } from './scenarios/s3-threshold.ts';
import { manyLanes } from './scenarios/s4-lanes.ts';
import { latency } from './scenarios/s5-latency.ts';
import { enqueueRate } from './scenarios/s6-enqueue.ts';
import { floor } from './scenarios/s7-floor.ts';
import { tableScale } from './scenarios/s8-scale.ts';
import { workerMemory } from './scenarios/s9-memory.ts';
import type { RunContext, ScenarioResult } from './stats.ts';

const scenarios: Record<string, (ctx: RunContext) => Promise<ScenarioResult>> = {
  s1: bulkThroughput,
  s2: strictFifo,
  s3: thresholdN,
  s4: manyLanes,
  s5: latency,
  s6: enqueueRate,
  s7: floor,
  s8: tableScale,
  s9: workerMemory,
};

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    repeats: { type: 'string' },
    only: { type: 'string' },
    systems: { type: 'string' },
    out: { type: 'string', default: 'bench/results' },
    merge: { type: 'boolean', default: false },
    report: { type: 'boolean', default: false },
  },
});


const quick = args.quick!;
const repeats = Number(args.repeats ?? (quick ? 1 : 3));
const systems = args.systems?.split(',');
const configs = allConfigs.filter((config) => !systems || systems.includes(config.system));
const selected = args.only?.split(',') ?? Object.keys(scenarios);
const ctx: RunContext = { quick, repeats, configs, log: (line) => console.error(line) };

async function packageVersion(name: string): Promise<string> {
  const url = new URL(`../node_modules/${name}/package.json`, import.meta.url);
  return (JSON.parse(await readFile(url, 'utf8')) as { version: string }).version;
}

const START = '<!-- results:start (written by bench/run.ts) -->';
const END = '<!-- results:end -->';

/** A document with the results between its markers replaced, or just the results when it has none. */
async function withTable(path: string, table: string): Promise<string> {
  const current = await readFile(path, 'utf8').catch(() => '');
  const from = current.indexOf(START);
  const to = current.indexOf(END);
  if (from < 0 || to < from) return table;
  return `${current.slice(0, from + START.length)}\n${table}${current.slice(to)}`;
}

function gitHead(): string {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown commit';
  }
}

// Dropping a database `with (force)` ends connections a stopped peer left open; such a client may
// emit its error with no listener. That is the harness's doing, not a result: note it and go on.
process.on('uncaughtException', (error: Error & { code?: string }) => {
  if (error.code === '57P01') {
    console.error(`  (a connection of a stopped system was ended by the harness: ${error.message})`);
    return;
  }
  console.error(error);
  process.exit(1);
});

// A peer's fire-and-forget call that fails (pg-boss v10 does not await its completions; under the
// singleton policy they can deadlock) is that system's trouble, seen in its figures: log it, go on.
process.on('unhandledRejection', (reason) => {
  console.error(`  (unhandled rejection in a system under test: ${String((reason as Error)?.message ?? reason).split('\n')[0]})`);
});

if (args.report) {
  // Only renders DIR/benchmarks.json again (after a change to the report's format).
  const saved = JSON.parse(await readFile(`${args.out}/benchmarks.json`, 'utf8')) as { meta: RunMeta; scenarios: ScenarioResult[] };
  await writeFile(`${args.out}/benchmarks.md`, await withTable(`${args.out}/benchmarks.md`, markdown(saved.meta, saved.scenarios)));
  await writeFile(`${args.out}/benchmarks.svg`, svgChart(saved.scenarios));
  process.exit(0);
}

const started = performance.now();
const results: ScenarioResult[] = [];
for (const id of selected) {
  const scenario = scenarios[id];
  if (!scenario) throw new Error(`unknown scenario ${id}; known: ${Object.keys(scenarios).join(', ')}`);
  console.error(`== ${id}`);
  const result = await scenario(ctx);
  const meta = await runMeta();
  result.run = { date: meta.date, usher: meta.versions.usher! };
  results.push(result);
  await writeOutputs(meta, false);
}
for (const database of ['bench_usher', 'bench_graphile', 'bench_pgboss', 'bench_bullmq', 'bench_floor']) await dropDatabase(database);

async function runMeta(): Promise<RunMeta> {
  return {
  date: new Date().toISOString(),
  quick,
  repeats,
  node: process.versions.node,
  machine: { cpus: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memory_gb: Math.round(totalmem() / 2 ** 30), platform: process.platform },
  postgres: await serverInfo(),
  versions: {
    usher: `${(JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version} (${gitHead()})`,
    'graphile-worker': await packageVersion('graphile-worker'),
    'pg-boss': await packageVersion('pg-boss'),
    bullmq: await packageVersion('bullmq'),
    pg: await packageVersion('pg'),
  },
  seconds: (performance.now() - started) / 1000,
  };
}

/** Written after every scenario, so a crash later loses nothing measured. */
async function writeOutputs(meta: RunMeta, print: boolean): Promise<void> {
  await mkdir(args.out!, { recursive: true });
  let all = [...results];
  if (args.merge) {
    const previous = await readFile(`${args.out}/benchmarks.json`, 'utf8')
      .then((text) => JSON.parse(text) as { scenarios: ScenarioResult[]; meta?: RunMeta & { runs?: RunMeta[] } }, () => ({ scenarios: [] as ScenarioResult[] }));
    all = [...previous.scenarios.filter((scenario) => !results.some((result) => result.id === scenario.id)), ...results];
    all.sort((a, b) => a.id.localeCompare(b.id));
  }
  const table = markdown(meta, all);
  await writeFile(`${args.out}/benchmarks.json`, JSON.stringify({ meta, scenarios: all }, null, 2) + '\n');
  await writeFile(`${args.out}/benchmarks.md`, await withTable(`${args.out}/benchmarks.md`, table));
  await writeFile(`${args.out}/benchmarks.svg`, svgChart(all));
  if (print) console.log(table);
}

await writeOutputs(await runMeta(), true);
// Everything is written. pg-boss's workers can leave polling timers behind after stop: after
// scenario 4's capped pg-boss runs, 37 timers were still pending 30 s after the end, and the run
// never exited.
process.exit(0);
