/** What every entrypoint starts with: validated config, a logger, signal handling, a database and its schema. */
import pg from 'pg';
import { loadConfig, type Config } from '../config.ts';
import { openDatabase, type Database } from '../db/connect.ts';
import { migrate, schemaStatus } from '../db/migrator.ts';
import { UsherError } from '../errors.ts';
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
    // `usher migrate` (forceDefinitions) always migrates; USHER_MIGRATE=check leaves it to that command.
    if (config.migrateMode === 'check' && !options.forceDefinitions) await checkSchema(pool, log);
    else await migrate(pool, log, options);
  } finally {
    await pool.end();
  }
  return { config, log, lifecycle, database };
}

async function checkSchema(pool: pg.Pool, log: Logger): Promise<void> {
  const status = await schemaStatus(pool);
  if (!status.current) {
    const problems = [
      status.pending.length > 0 ? `not applied: ${status.pending.join(', ')}` : '',
      status.changed.length > 0 ? `changed since applied: ${status.changed.join(', ')}` : '',
      status.unknown.length > 0 ? `applied by a newer Usher: ${status.unknown.join(', ')}` : '',
      status.definitions_current ? '' : 'the sql/ definitions differ',
    ].filter(Boolean);
    throw new UsherError('migration_failed',
      `USHER_MIGRATE=check and the schema is not current (${problems.join('; ')}): run \`usher migrate\` as the schema's owner`);
  }
  log.info({ event: 'schema:checked', version: status.version }, 'schema up to date (checked, not migrated)');
}
