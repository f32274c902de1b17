/**
 * A PgBouncer of the test's own in front of a test database (RELIABILITY T11). Debian's package
 * is 1.18: it refuses startup parameters it does not track and, in transaction mode, gives each
 * transaction whichever server connection is free, so a client's session state does not follow it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './ports.ts';
import { waitFor } from './wait.ts';

/** The pgbouncer binary (PGBOUNCER, then Debian's path, then PATH), or undefined where it is not installed. */
export function findPgbouncer(): string | undefined {
  const candidates = [process.env.PGBOUNCER, '/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].filter((path): path is string => !!path);
  const found = candidates.find((path) => existsSync(path));
  if (found) return found;
  const which = spawnSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' });
  return which.status === 0 ? which.stdout.trim() || undefined : undefined;
}

export interface Pgbouncer {
  /** The test database, reached through PgBouncer. */
  readonly url: string;
  /** What PgBouncer logged (it logs to stderr here). */
  readonly lines: string[];
  stop(): Promise<void>;
}


function quoteValue(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * Starts PgBouncer in `poolMode` with one server connection for the database, so every client's
 * transactions share it: what one client leaves on the session, the next one meets.
 */
export async function startPgbouncer(binary: string, databaseUrl: string, poolMode: 'session' | 'transaction'): Promise<Pgbouncer> {
  const target = new URL(databaseUrl);
  const user = decodeURIComponent(target.username || 'postgres');
  const server = [
    `host=${target.hostname}`, `port=${target.port || '5432'}`, `dbname=${target.pathname.slice(1)}`, `user=${user}`,
    ...(target.password ? [`password=${quoteValue(decodeURIComponent(target.password))}`] : []),
  ].join(' ');
  const dir = mkdtempSync(join(tmpdir(), 'usher-pgbouncer-'));
  const port = await freePort();
  writeFileSync(join(dir, 'users.txt'), `"${user}" ""\n`);
  writeFileSync(join(dir, 'pgbouncer.ini'), [
    '[databases]',
    `usher = ${server}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${join(dir, 'users.txt')}`,
    `pool_mode = ${poolMode}`,
    'default_pool_size = 1',
    'max_client_conn = 200',
    'logfile =',
    'pidfile =',
    '',
  ].join('\n'));
  // PgBouncer will not run as root: it drops to the server's user, which must read its files.
  const asRoot = process.getuid?.() === 0;
  if (asRoot) for (const path of [dir, join(dir, 'users.txt'), join(dir, 'pgbouncer.ini')]) chmodSync(path, 0o755);
  const child: ChildProcess = spawn(binary, [...(asRoot ? ['-u', 'postgres'] : []), join(dir, 'pgbouncer.ini')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const collect = (chunk: Buffer) => lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `postgres://${encodeURIComponent(user)}@127.0.0.1:${port}/usher`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`pgbouncer exited: ${lines.slice(-5).join(' | ')}`);
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
      try {
        await client.connect();
        await client.query('select 1');
        return true;
      } catch {
        return false;
      } finally {
        await client.end().catch(() => undefined);
      }
    }, { what: `pgbouncer answering on port ${port}`, timeoutMs: 10_000, intervalMs: 50 });
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${lines.slice(-10).join('\n')}`);
  }
  return { url, lines, stop };
}
