/**
 * A database of its own for each test file, cloned from the migrated template: tests commit for
 * real (NOTIFY, several connections, child processes) and never see each other's rows.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { createKysely, type UsherKysely } from '../../src/db/kysely.ts';
import { withDatabase } from './urls.ts';

// Same parsing as the product: bigint ids as strings.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => value);

export interface TestDatabase {
  readonly name: string;
  readonly url: string;
  readonly pool: pg.Pool;
  readonly db: UsherKysely;
  /** A client of its own (for transactions and LISTEN); closed by drop(). */
  connect(): Promise<pg.Client>;
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl');
  const template = inject('templateDatabase');
  const name = `usher_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  for (let attempt = 1; ; attempt += 1) {
    try {
      await admin.query(`create database ${name} template ${template}`);
      break;
    } catch (error) {
      // Two files cloning the same template at the same instant: try again.
      if (attempt >= 20 || !/being accessed by other users/.test((error as Error).message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
  await admin.end();
  const url = withDatabase(adminUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 20 });
  const clients: pg.Client[] = [];
  return {
    name,
    url,
    pool,
    db: createKysely(pool),
    async connect() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      clients.push(client);
      return client;
    },
    async drop() {
      await Promise.all(clients.map((client) => client.end().catch(() => undefined)));
      await pool.end();
      const dropper = new pg.Client({ connectionString: adminUrl });
      await dropper.connect();
      // pool.end() resolves before its connections have closed: dropping WITH (FORCE) under them
      // would terminate them mid-goodbye, an uncaught 57P01 in the test process. Give them 2 s.
      for (let attempt = 0; attempt < 100; attempt += 1) {
        const { rows } = await dropper.query<{ n: number }>(
          `select count(*)::int as n from pg_stat_activity where datname = $1 and application_name not like 'usher-%'`, [name]);
        if (rows[0]!.n === 0) break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await dropper.query(`drop database if exists ${name} with (force)`);
      await dropper.end();
    },
  };
}
