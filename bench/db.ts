/** The server the benchmark runs on, and one database per system on it (dropped and recreated). */
import pg from 'pg';

export const serverUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export function databaseUrl(database: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
}

const validName = /^[a-z_][a-z0-9_]*$/;

/** Drops (forcing out connections) and creates `database`; returns its URL. */
export async function recreateDatabase(database: string): Promise<string> {
  if (!validName.test(database)) throw new Error(`bad database name ${database}`);
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${database} with (force)`);
    await admin.query(`create database ${database}`);
  } finally {
    await admin.end();
  }
  return databaseUrl(database);
}

export async function dropDatabase(database: string): Promise<void> {
  if (!validName.test(database)) throw new Error(`bad database name ${database}`);
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${database} with (force)`);
  } finally {
    await admin.end();
  }
}

/** Postgres version and the settings that decide queue speed. */
export async function serverInfo(): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ name: string; setting: string }>(
      `select name, setting || coalesce(unit, '') as setting from pg_settings
       where name in ('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method', 'commit_delay',
         'shared_buffers', 'max_connections', 'wal_level', 'full_page_writes', 'work_mem', 'jit')
       order by name`,
    );
    return Object.fromEntries(rows.map((row) => [row.name, row.setting]));
  } finally {
    await client.end();
  }
}
