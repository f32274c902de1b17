/** Markdown tables, the JSON record and an SVG chart of Usher's ratios, from one run's results. */
import { fmt, median, type Row, type ScenarioResult } from './stats.ts';

export interface RunMeta {
  readonly date: string;
  readonly quick: boolean;
  readonly repeats: number;
  readonly node: string;
  readonly machine: { cpus: string; cores: number; memory_gb: number; platform: string };
  readonly postgres: Record<string, string>;
  readonly versions: Record<string, string>;
  readonly seconds: number;
}

/**
 * Usher's median ÷ the row's (higher is better) or the row's ÷ Usher's (lower is better): > 1 means
 * Usher wins. Usher is its best configuration in the row's group, as each peer's best is its own row.
 */
export function ratio(scenario: ScenarioResult, row: Row, key: string): number {
  const metric = scenario.metrics.find((m) => m.key === key)!;
  const usherRows = scenario.rows.filter((r) => r.group === row.group && r.system === 'usher' && !r.error);
  if (usherRows.length === 0 || row.error) return Number.NaN;
  const medians = usherRows.map((r) => median(r.values[key] ?? []));
  const mine = metric.better === 'higher' ? Math.max(...medians) : Math.min(...medians);
  const theirs = median(row.values[key] ?? []);
  return metric.better === 'higher' ? mine / theirs : theirs / mine;
}

function runs(scenarios: readonly ScenarioResult[]): number {
  return new Set(scenarios.map((scenario) => scenario.run?.date)).size;
}

export function markdown(meta: RunMeta, scenarios: ScenarioResult[]): string {
  const lines: string[] = [];
  const merged = runs(scenarios) > 1;
  lines.push(`${merged ? 'Latest run' : 'Run'} ${meta.date}${meta.quick ? ' (--quick)' : ''}: median of ${meta.repeats} runs per row, configurations interleaved within each round. ` +
    `${meta.machine.cores} cores (${meta.machine.cpus}), ${meta.machine.memory_gb} GB, Node ${meta.node}, Postgres ${meta.postgres.server_version} ` +
    `(synchronous_commit=${meta.postgres.synchronous_commit}, fsync=${meta.postgres.fsync}, shared_buffers=${meta.postgres.shared_buffers}). ` +
    `Versions: ${Object.entries(meta.versions).map(([name, version]) => `${name} ${version}`).join(', ')}. Took ${meta.seconds.toFixed(0)} s.`);
  lines.push('');
  lines.push('"× Usher" is the median of Usher\'s best configuration in the group divided by the row\'s on the first metric (inverted where lower is better): above 1, Usher is ahead. * marks a row where a run hit its time cap.');
  for (const scenario of scenarios) {
    lines.push('', `### ${scenario.title}`, '');
    if (merged && scenario.run) lines.push(`- Measured in the run of ${scenario.run.date} (usher ${scenario.run.usher}).`);
    for (const note of scenario.notes) lines.push(`- ${note}`);
    if (scenario.notes.length > 0) lines.push('');
    const first = scenario.metrics[0]!;
    lines.push(`| group | configuration | ${scenario.metrics.map((m) => m.label).join(' | ')} | × Usher |`);
    lines.push(`| --- | --- | ${scenario.metrics.map(() => '---:').join(' | ')} | ---: |`);
    for (const row of scenario.rows) {
      const cells = row.error
        ? scenario.metrics.map((_, i) => (i === 0 ? `not run: ${row.error}` : ''))
        : scenario.metrics.map((m) => fmt(median(row.values[m.key] ?? []), m.digits));
      const r = ratio(scenario, row, first.key);
      lines.push(`| ${row.group} | ${row.label}${row.capped ? ' *' : ''} | ${cells.join(' | ')} | ${Number.isFinite(r) ? `${fmt(r)}×` : '–'} |`);
    }
  }
  return lines.join('\n') + '\n';
}

/** One bar per peer row: Usher's advantage on the scenario's first metric, on a log scale. */
export function svgChart(scenarios: ScenarioResult[]): string {
  const bars: { label: string; value: number }[] = [];
  for (const scenario of scenarios) {
    for (const row of scenario.rows) {
      if (row.system === 'usher') continue;
      const value = ratio(scenario, row, scenario.metrics[0]!.key);
      if (Number.isFinite(value) && value > 0) bars.push({ label: `${scenario.id} ${row.group}: ${row.label}`, value });
    }
  }
  const barHeight = 18;
  const labelWidth = 390;
  const plotWidth = 420;
  const top = 40;
  const height = top + bars.length * (barHeight + 4) + 40;
  const maxLog = Math.max(1, ...bars.map((bar) => Math.log10(bar.value)));
  const minLog = Math.min(-1, ...bars.map((bar) => Math.log10(bar.value)));
  const x = (log: number) => labelWidth + ((log - minLog) / (maxLog - minLog)) * plotWidth;
  const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth + plotWidth + 80}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">Usher ÷ peer, median of one run (log scale; right of 1× = Usher ahead)</text>`,
  ];
  for (let decade = Math.ceil(minLog); decade <= Math.floor(maxLog); decade += 1) {
    parts.push(`<line x1="${x(decade)}" y1="${top - 5}" x2="${x(decade)}" y2="${height - 30}" stroke="${decade === 0 ? '#333' : '#ddd'}"/>`);
    parts.push(`<text x="${x(decade)}" y="${height - 15}" text-anchor="middle">${10 ** decade}×</text>`);
  }
  bars.forEach((bar, i) => {
    const y = top + i * (barHeight + 4);
    const log = Math.log10(bar.value);
    const from = x(Math.min(0, log));
    const to = x(Math.max(0, log));
    parts.push(`<text x="${labelWidth - 6}" y="${y + 13}" text-anchor="end">${escape(bar.label)}</text>`);
    parts.push(`<rect x="${from}" y="${y}" width="${Math.max(1, to - from)}" height="${barHeight}" fill="${log >= 0 ? '#2a7ab9' : '#d9534f'}"/>`);
    parts.push(`<text x="${to + 4}" y="${y + 13}">${fmt(bar.value)}×</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}
