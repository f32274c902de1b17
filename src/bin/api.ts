/** `usher api`: the HTTP API (see docs/api.md) on USHER_API_HOST:USHER_API_PORT, or --host/--port. */
import { startApiServer, assertSafeBinding } from '../api/server.ts';
import { loadConfig } from '../config.ts';
import { createPool } from '../db/pool.ts';
import { openContext } from './context.ts';

export interface ApiCommandOptions {
  readonly port?: number;
  readonly host?: string;
}

export async function runApi(options: ApiCommandOptions): Promise<void> {
  // Checked before the database is opened or migrated: a refused start changes nothing.
  const settings = loadConfig();
  const host = options.host ?? settings.apiHost;
  const port = options.port ?? settings.apiPort;
  assertSafeBinding(host, settings.apiTokens.length);
  const { config, log, lifecycle, database } = await openContext('api');
  const pool = createPool({
    url: database.url,
    applicationName: `usher-api:${process.pid}`,
    max: config.apiPoolSize,
    statementTimeoutMs: 30_000,
    queryTimeoutMs: 35_000,
    connectionTimeoutMs: 5_000,
  }, log);
  lifecycle.onStop(() => pool.end());
  const server = await startApiServer({
    pool, log, tokens: config.apiTokens, host, port, databaseUrl: database.url,
    maxWaiting: config.apiMaxWaiting,
    rateLimit: { limit: config.apiRateLimit, windowSeconds: config.apiRateWindowSeconds },
  });
  lifecycle.onStop(async () => {
    await server.close();
    log.info({ event: 'api:stopped' }, 'API stopped');
  });
}
