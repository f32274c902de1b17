/**
 * Applies migrations/ (numbered, forward-only, each once) and then sql/ (functions, triggers and
 * views, re-applied every time), all in one transaction under an advisory lock, so any number of
 * processes may migrate at once and the schema never shows half-applied.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { UsherError } from '../errors.ts';
import type { Logger } from '../log.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
export const migrationsDir = `${root}migrations`;
export const sqlDir = `${root}sql`;

const migrationName = /^(\d{4})_[a-z0-9_]+\.sql$/;

export interface MigrateResult {
  /** Migrations applied by this call, in order. */
  readonly applied: string[];
  /** The newest migration now in the database. */
  readonly version: string | undefined;
}

async function sqlFiles(dir: string, pattern: RegExp): Promise<{ name: string; text: string }[]> {
  const names = (await readdir(dir)).filter((name) => name.endsWith('.sql')).sort();
  const invalid = names.filter((name) => !pattern.test(name));
  if (invalid.length > 0) {
    throw new UsherError('migration_failed', `unexpected file names in ${dir}: ${invalid.join(', ')}`);
  }
  return Promise.all(names.map(async (name) => ({ name, text: await readFile(`${dir}/${name}`, 'utf8') })));
}

function checksum(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export interface MigrateOptions {
  /** Re-apply sql/ even when it is unchanged since the last migrate (the `usher migrate` command does). */
  readonly forceDefinitions?: boolean;
}

const DEFINITIONS_ROW = 'sql/';

export async function migrate(pool: pg.Pool, log: Logger, options: MigrateOptions = {}): Promise<MigrateResult> {
  const migrations = await sqlFiles(migrationsDir, migrationName);
  const definitions = await sqlFiles(sqlDir, /^\d{3}_[a-z0-9_]+\.sql$/);
  const client = await pool.connect();
  const applied: string[] = [];
  let current = '';
  try {
    await client.query('begin');
    await client.query(`select pg_advisory_xact_lock(hashtext('usher.migrate'))`);
    await client.query('create schema if not exists usher');
    await client.query(`
      create table if not exists usher.schema_migrations (
        name text primary key,
        checksum text not null,
        applied_at timestamptz not null default now()
      )`);
    await client.query(`comment on table usher.schema_migrations is
      'Applied migrations (one row each) and the checksum of the sql/ definitions last applied (row "sql/").'`);
    const done = new Map(
      (await client.query<{ name: string; checksum: string }>('select name, checksum from usher.schema_migrations'))
        .rows.map((row) => [row.name, row.checksum]),
    );
    for (const migration of migrations) {
      current = migration.name;
      const recorded = done.get(migration.name);
      if (recorded !== undefined) {
        if (recorded !== checksum(migration.text)) {
          throw new UsherError('migration_failed', `migration ${migration.name} was edited after it was applied; add a new migration instead`);
        }
        continue;
      }
      await client.query(migration.text);
      await client.query('insert into usher.schema_migrations (name, checksum) values ($1, $2)', [migration.name, checksum(migration.text)]);
      applied.push(migration.name);
    }
    const definitionsChecksum = checksum(definitions.map((definition) => definition.text).join('\n'));
    if (options.forceDefinitions || applied.length > 0 || done.get(DEFINITIONS_ROW) !== definitionsChecksum) {
      for (const definition of definitions) {
        current = definition.name;
        await client.query(definition.text);
      }
      await client.query(
        `insert into usher.schema_migrations (name, checksum) values ($1, $2)
         on conflict (name) do update set checksum = excluded.checksum, applied_at = now()`,
        [DEFINITIONS_ROW, definitionsChecksum],
      );
    }
    await client.query('commit');
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    if (error instanceof UsherError) throw error;
    throw new UsherError('migration_failed', `migrate failed in ${current}: ${(error as Error).message}`, { cause: error });
  } finally {
    client.release();
  }
  const version = migrations.at(-1)?.name;
  log.info({ event: 'schema:migrated', applied, version }, applied.length > 0 ? `applied ${applied.length} migrations` : 'schema up to date');
  return { applied, version };
}

export interface SchemaStatus {
  /** True when every file in migrations/ is applied unchanged and sql/ was applied as it is now. */
  readonly current: boolean;
  /** Migrations in migrations/ that the database has not applied. */
  readonly pending: string[];
  /** Migrations applied with other contents than the file now has. */
  readonly changed: string[];
  /** Migrations the database has that migrations/ does not (a newer Usher migrated it). */
  readonly unknown: string[];
  /** Whether the sql/ definitions in the database are the ones in sql/ now. */
  readonly definitions_current: boolean;
  /** The newest migration in migrations/. */
  readonly version: string | undefined;
}

interface ShippedSchema {
  readonly migrations: readonly { readonly name: string; readonly checksum: string }[];
  readonly definitionsChecksum: string;
}

let shipped: Promise<ShippedSchema> | undefined;

/** The schema this process was started with: its files are read once (a readiness probe calls often). */
function shippedSchema(): Promise<ShippedSchema> {
  shipped ??= (async () => {
    const migrations = await sqlFiles(migrationsDir, migrationName);
    const definitions = await sqlFiles(sqlDir, /^\d{3}_[a-z0-9_]+\.sql$/);
    return {
      migrations: migrations.map((migration) => ({ name: migration.name, checksum: checksum(migration.text) })),
      definitionsChecksum: checksum(definitions.map((definition) => definition.text).join('\n')),
    };
  })();
  shipped.catch(() => {
    shipped = undefined;
  });
  return shipped;
}

/** Compares usher.schema_migrations with migrations/ and sql/ (as this process found them), without changing anything. */
export async function schemaStatus(db: Pick<pg.ClientBase, 'query'>): Promise<SchemaStatus> {
  const { migrations, definitionsChecksum } = await shippedSchema();
  const exists = await db.query<{ present: boolean }>(`select to_regclass('usher.schema_migrations') is not null as present`);
  const done = new Map(exists.rows[0]?.present
    ? (await db.query<{ name: string; checksum: string }>('select name, checksum from usher.schema_migrations')).rows
      .map((row) => [row.name, row.checksum])
    : []);
  const pending = migrations.filter((migration) => !done.has(migration.name)).map((migration) => migration.name);
  const changed = migrations
    .filter((migration) => done.has(migration.name) && done.get(migration.name) !== migration.checksum)
    .map((migration) => migration.name);
  const known = new Set([...migrations.map((migration) => migration.name), DEFINITIONS_ROW]);
  const unknown = [...done.keys()].filter((name) => !known.has(name)).sort();
  const definitionsCurrent = done.get(DEFINITIONS_ROW) === definitionsChecksum;
  return {
    current: pending.length === 0 && changed.length === 0 && unknown.length === 0 && definitionsCurrent,
    pending,
    changed,
    unknown,
    definitions_current: definitionsCurrent,
    version: migrations.at(-1)?.name,
  };
}
