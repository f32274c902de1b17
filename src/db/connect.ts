/**
 * Resolves the database: DATABASE_URL when set; otherwise the embedded Postgres, started by this
 * process unless one is already serving Usher's data folder on the embedded port (as under `usher start`).
 */
import pg from 'pg';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';

export interface Database {
  readonly url: string;
  /** True when this process started the server and must stop it. */
  readonly owned: boolean;
  stop(): Promise<void>;
}

export function embeddedUrl(port: number): string {
  return `postgres://postgres:postgres@127.0.0.1:${port}/usher`;
}

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function openDatabase(config: Config, log: Logger): Promise<Database> {
  if (config.databaseUrl) {
    return { url: config.databaseUrl, owned: false, stop: async () => undefined };
  }
  const url = embeddedUrl(config.embeddedPort);
  if (await answers(url)) {
    log.info({ event: 'embedded_pg:reused', port: config.embeddedPort }, 'using the embedded Postgres already running');
    return { url, owned: false, stop: async () => undefined };
  }
  // Loaded only here: the package's import has side effects a process with DATABASE_URL does not need.
  const { assertWritable, startEmbedded } = await import('./embedded.ts');
  assertWritable(config.dataDir);
  const server = await startEmbedded({ dataDir: config.dataDir, port: config.embeddedPort, database: 'usher' }, log);
  return { url: server.url, owned: true, stop: () => server.stop() };
}
