/** Medians, percentiles and the result rows every scenario fills. */
import { makeAdapter } from './adapters/index.ts';
import { configLabel, type Adapter, type SystemConfig } from './adapters/types.ts';

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Nearest-rank percentile; NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  const finite = values.filter((value) => Number.isFinite(value));
  if (finite.length === 0) return Number.NaN;
  const sorted = [...finite].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export interface MetricDef {
  readonly key: string;
  readonly label: string;
  /** Higher is better (a rate) or lower is better (a latency). */
  readonly better: 'higher' | 'lower';
  readonly digits?: number;
}

export interface Row {
  /** Rows are compared with Usher's row of the same group. */
  readonly group: string;
  readonly label: string;
  readonly system: string;
  readonly values: Record<string, number[]>;
  /** A run stopped at its time cap (rates then count what finished in the cap). */
  capped: boolean;
  error?: string;
}

export interface ScenarioResult {
  readonly id: string;
  readonly title: string;
  readonly notes: string[];
  readonly metrics: MetricDef[];
  readonly rows: Row[];
  /** The invocation that measured it (set by run.ts; a merged report can hold several). */
  run?: { readonly date: string; readonly usher: string };
}

export interface RunContext {
  readonly quick: boolean;
  readonly repeats: number;
  readonly configs: readonly SystemConfig[];
  readonly log: (line: string) => void;
}

/**
 * Usher's "fast" configuration only claims ahead (prefetch). Where that cannot change anything (one
 * lane at threshold 1, idle workers, enqueues alone) its defaults run alone.
 */
export function withoutUsherFast(configs: readonly SystemConfig[]): SystemConfig[] {
  return configs.filter((config) => config.system !== 'usher' || config.variant !== 'fast');
}

/**
 * Runs `once` for every configuration, `repeats` times, interleaving configurations within each
 * round so drift on a shared machine spreads over all of them; one row per configuration.
 */
export async function measure(
  ctx: RunContext,
  group: string,
  configs: readonly SystemConfig[],
  once: (adapter: Adapter, config: SystemConfig) => Promise<{ values: Record<string, number>; capped?: boolean }>,
): Promise<Row[]> {
  const rows = configs.map((config): Row => ({ group, label: configLabel(config), system: config.system, values: {}, capped: false }));
  for (let round = 0; round < ctx.repeats; round += 1) {
    for (const [index, config] of configs.entries()) {
      const row = rows[index]!;
      if (row.error) continue;
      const adapter = makeAdapter(config);
      try {
        const { values, capped } = await once(adapter, config);
        for (const [key, value] of Object.entries(values)) (row.values[key] ??= []).push(value);
        row.capped ||= capped ?? false;
        ctx.log(`  ${group} | ${row.label} | round ${round + 1}: ${Object.entries(values).map(([k, v]) => `${k}=${fmt(v)}`).join(' ')}${capped ? ' (capped)' : ''}`);
      } catch (error) {
        row.error = (error as Error).message.split('\n')[0];
        ctx.log(`  ${group} | ${row.label}: ${row.error}`);
      } finally {
        await adapter.close().catch(() => undefined);
      }
    }
  }
  return rows;
}

export function fmt(value: number, digits?: number): string {
  if (!Number.isFinite(value)) return '–';
  if (digits !== undefined) return value.toFixed(digits);
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}
