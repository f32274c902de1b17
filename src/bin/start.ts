/**
 * `usher start`: the whole system as one process tree for a newcomer. This process owns the
 * database (embedded unless DATABASE_URL is set) and supervises an executor, a worker and the HTTP
 * API as child processes, restarting one that dies, so killing a worker shows recovery as it happens in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { assertSafeBinding } from '../api/server.ts';
import { backoffMs, delay } from '../backoff.ts';
import { loadConfig } from '../config.ts';
import { openContext } from './context.ts';

const cliPath = fileURLToPath(new URL('../../bin/usher.js', import.meta.url));
const examplePacks = fileURLToPath(new URL('../../examples/packs', import.meta.url));

interface Supervised {
  readonly name: string;
  readonly args: string[];
  child?: ChildProcess;
  exited?: Promise<void>;
  restarts: number;
}

export async function runStart(options: { packs?: string }): Promise<void> {
  // The api child would refuse an open API on a public address at every restart; refuse it once, before anything starts.
  const settings = loadConfig();
  assertSafeBinding(settings.apiHost, settings.apiTokens.length);
  const { config, log, lifecycle, database } = await openContext('start');
  const env = { ...process.env, DATABASE_URL: database.url };
  let stopping = false;
  const children: Supervised[] = [
    { name: 'executor', args: ['executor'], restarts: 0 },
    { name: 'worker', args: ['worker', '--packs', options.packs ?? examplePacks], restarts: 0 },
    { name: 'api', args: ['api'], restarts: 0 },
  ];

  const launch = (supervised: Supervised) => {
    // A group of its own: a terminal's Ctrl-C reaches only this supervisor, which then stops each child once.
    const child = spawn(process.execPath, [cliPath, ...supervised.args], { env, stdio: 'inherit', detached: true });
    supervised.child = child;
    supervised.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        resolve();
        if (stopping) return;
        supervised.restarts += 1;
        const wait = backoffMs(supervised.restarts, 500, 30_000);
        log.warn({ event: 'start:child_exited', child: supervised.name, code, signal, restart_in_ms: wait }, `${supervised.name} exited; restarting`);
        void delay(wait).then(() => {
          if (!stopping) launch(supervised);
        });
      });
    });
    log.info({ event: 'start:child_started', child: supervised.name, pid: child.pid }, `${supervised.name} started`);
  };

  lifecycle.onStop(async () => {
    stopping = true;
    for (const supervised of children) supervised.child?.kill('SIGTERM');
    const deadline = delay((config.shutdownGraceSeconds + config.abortGraceSeconds + 10) * 1000);
    const allExited = Promise.all(children.map((supervised) => supervised.exited));
    if (await Promise.race([allExited.then(() => true), deadline.then(() => false)]) === false) {
      for (const supervised of children) supervised.child?.kill('SIGKILL');
      await allExited;
    }
  });

  children.forEach(launch);
  log.info({
    event: 'start:ready',
    database_url: database.url,
    try: `psql ${database.url} -c "insert into usher.executions (action_ref, params) values ('demo.echo', '{\\"n\\": 1}')"`,
  }, 'Usher is running; press Ctrl-C to stop');
}
