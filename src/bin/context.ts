/** What every entrypoint starts with: validated config, a logger, signal handling, a database and its schema. */
import pg from 'pg';
import { loadConfig, type Config } from '../config.ts';
import { openDatabase, type Database } from '../db/connect.ts';
import { migrate } from '../db/migrator.ts';
import { createLogger, type Logger } from '../log.ts';
import { Lifecycle } from './shutdown.ts';

export interface ProcessContext {
  readonly config: Config;
  readonly log: Logger;
  readonly lifecycle: Lifecycle;
  readonly database: Database;
}

export async function openContext(component: string, options: { forceDefinitions?: boolean } = {}): Promise<ProcessContext> {
  const config = loadConfig();
  const log = createLogger(config.logLevel, { component, pid: process.pid });
  const lifecycle = new Lifecycle(log);
  const database = await openDatabase(config, log);
  lifecycle.onStop(() => database.stop());
  const pool = new pg.Pool({ connectionString: database.url, max: 1, application_name: `usher-migrate:${component}` });
  try {
    await migrate(pool, log, options);
  } finally {
    await pool.end();
  }
  return { config, log, lifecycle, database };
}
