import { openContext } from './context.ts';

export async function runMigrate(): Promise<void> {
  const { database } = await openContext('migrate', { forceDefinitions: true });
  await database.stop();
}
