/**
 * One Postgres server per test run: the one at DATABASE_URL, or an embedded one in a temp folder.
 * A migrated template database is made once; each test file clones it (see database.ts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startEmbedded } from '../../src/db/embedded.ts';
import { migrate } from '../../src/db/migrator.ts';
import { createLogger } from '../../src/log.ts';
import { freePort } from './ports.ts';
import { withDatabase } from './urls.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string;
    templateDatabase: string;
  }
}


export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const log = createLogger(process.env.USHER_TEST_LOG_LEVEL ?? 'warn', { component: 'test-setup' });
  let adminUrl = process.env.DATABASE_URL;
  let cleanup = async () => undefined as void;
  if (!adminUrl) {
    const dataDir = await mkdtemp(join(tmpdir(), 'usher-test-'));
    const server = await startEmbedded({ dataDir, port: await freePort(), database: 'usher' }, log);
    adminUrl = server.url;
    cleanup = async () => {
      await server.stop();
      await rm(dataDir, { recursive: true, force: true });
      await rm(server.dataDir, { recursive: true, force: true });
    };
  }
  const templateDatabase = `usher_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${templateDatabase}`);
  await admin.query(`create database ${templateDatabase}`);
  const pool = new pg.Pool({ connectionString: withDatabase(adminUrl, templateDatabase), max: 1 });
  await migrate(pool, log);
  await pool.end();

  project.provide('adminUrl', adminUrl);
  project.provide('templateDatabase', templateDatabase);
  return async () => {
    await admin.query(`drop database if exists ${templateDatabase} with (force)`);
    await admin.end();
    await cleanup();
  };
}
