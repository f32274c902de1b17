/**
 * Real Usher processes for integration tests: `node bin/usher.js <command>` against the test
 * database, with their JSON log lines kept for assertions and for the failure message.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const cliPath = fileURLToPath(new URL('../../bin/usher.js', import.meta.url));
export const testPacks = fileURLToPath(new URL('../packs', import.meta.url));

export interface UsherProcess {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line (parsed) that matches; rejects if the process exits first. */
  waitForEvent(event: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  kill(signal?: NodeJS.Signals): void;
}

const live = new Set<UsherProcess>();

export function spawnUsher(args: string[], env: Record<string, string | undefined>, cli = cliPath): UsherProcess {
  const child = spawn(process.execPath, [cli, ...args], {
    env: {
      ...process.env,
      USHER_LOG_LEVEL: 'info',
      USHER_POLL_INTERVAL_MS: '200',
      USHER_SWEEP_INTERVAL_MS: '200',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { event: string; resolve: (line: Record<string, unknown>) => void }[] = [];
  // A pipe's chunks end anywhere: a line split between two is kept until its end arrives.
  const partial = { stdout: '', stderr: '' };
  const onData = (stream: keyof typeof partial) => (chunk: string) => {
    const pieces = (partial[stream] + chunk).split('\n');
    partial[stream] = pieces.pop()!;
    for (const line of pieces.filter(Boolean)) {
      lines.push(line);
      let parsed: Record<string, unknown> | undefined;
      try {
        parsed = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      for (const waiter of [...waiters]) {
        if (parsed.event === waiter.event) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(parsed);
        }
      }
    }
  };
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  for (const stream of ['stdout', 'stderr'] as const) {
    child[stream]?.on('data', onData(stream));
    // Whatever the process wrote last without a newline.
    child[stream]?.on('end', () => onData(stream)('\n'));
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const proc: UsherProcess = {
    child,
    lines,
    exited,
    waitForEvent(event, timeoutMs = 30_000) {
      const seen = lines.map((line) => { try { return JSON.parse(line) as Record<string, unknown>; } catch { return undefined; } })
        .find((line) => line?.event === event);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${event} from usher ${args.join(' ')} in ${timeoutMs} ms:\n${lines.slice(-20).join('\n')}`)), timeoutMs);
        waiters.push({ event, resolve: (line) => { clearTimeout(timer); resolve(line); } });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`usher ${args.join(' ')} exited (${code ?? signal}) before ${event}:\n${lines.slice(-20).join('\n')}`));
        });
      });
    },
    kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
  live.add(proc);
  void exited.then(() => live.delete(proc));
  return proc;
}

export async function startWorker(databaseUrl: string, options: { concurrency?: number; name?: string; env?: Record<string, string> } = {}): Promise<UsherProcess> {
  const args = ['worker', '--packs', testPacks, '--concurrency', String(options.concurrency ?? 4)];
  if (options.name) args.push('--name', options.name);
  const proc = spawnUsher(args, { DATABASE_URL: databaseUrl, ...options.env });
  await proc.waitForEvent('worker:started');
  return proc;
}

export async function startExecutor(databaseUrl: string, env: Record<string, string> = {}): Promise<UsherProcess> {
  const proc = spawnUsher(['executor'], { DATABASE_URL: databaseUrl, ...env });
  await proc.waitForEvent('executor:started');
  return proc;
}

/** Kills every process spawned by this test file that is still alive, and waits for them to go. */
export async function killAll(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const procs = [...live];
  for (const proc of procs) proc.kill(signal);
  await Promise.all(procs.map((proc) => proc.exited));
}
