import { openContext } from './context.ts';

export async function runMigrate(): Promise<void> {
  const { lifecycle } = await openContext('migrate', { forceDefinitions: true });
  await lifecycle.exit(0);
}
