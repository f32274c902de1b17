/**
 * An embedded Postgres of one test file's own, whatever DATABASE_URL says: for tests that must
 * take the server down, or count what happens cluster-wide (XIDs), with no other test beside them.
 * The `usher` database on it is migrated.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbedded, type EmbeddedDatabase } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrator.ts';
import { createLogger } from '../../src/log.ts';
import { freePort } from './ports.ts';
import { waitFor } from './wait.ts';

const log = createLogger('silent', { component: 'test' });


export interface OwnServer {
  readonly url: string;
  /** Connections to `url`; the idle ones that die with a crash are replaced on the next query. */
  readonly pool: pg.Pool;
  /**
   * Immediate shutdown of the postmaster and every backend (SIGQUIT, as `pg_ctl stop -m immediate`:
   * no checkpoint), the server kept down for `outageMs`, then the same cluster started again
   * (WAL replay); returns the ms it was down.
   */
  crashAndRestart(outageMs: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startOwnServer(prefix: string): Promise<OwnServer> {
  const dataDir = mkdtempSync(join(tmpdir(), `usher-${prefix}-`));
  const port = await freePort();
  let server: EmbeddedDatabase = await startEmbedded({ dataDir, port, database: 'usher' }, log);
  const pool = new pg.Pool({ connectionString: server.url, max: 4 });
  pool.on('error', () => undefined);
  await migrate(pool, log);
  return {
    url: server.url,
    pool,
    async crashAndRestart(outageMs) {
      const crashedAt = performance.now();
      const pid = Number(readFileSync(join(server.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(pid, 'SIGQUIT');
      await waitFor(() => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      }, { what: `postmaster ${pid} gone`, timeoutMs: 20_000, intervalMs: 20 });
      // The outage itself, not a wait for anything.
      await new Promise((resolve) => setTimeout(resolve, outageMs));
      server = await startEmbedded({ dataDir, port, database: 'usher' }, log);
      return performance.now() - crashedAt;
    },
    async stop() {
      await pool.end();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(server.dataDir, { recursive: true, force: true });
    },
  };
}
