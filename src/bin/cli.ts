/**
 * The `usher` command. commander parses the arguments: it is the most used Node CLI parser, with
 * subcommands, typed option parsing and generated help.
 */
import { Command, InvalidArgumentError } from 'commander';
import { UsherError } from '../errors.ts';
import { runApi } from './api.ts';
import { runExecutor } from './executor.ts';
import { runMigrate } from './migrate.ts';
import { runStart } from './start.ts';
import { runWorker } from './worker.ts';

function positiveInteger(value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed <= 0) throw new InvalidArgumentError('must be a positive integer');
  return parsed;
}

function nonNegativeInteger(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value) || parsed > 10000) throw new InvalidArgumentError('must be a whole number from 0 to 10000');
  return parsed;
}

function port(value: string): number {
  const parsed = Number(value);
  if (!/^[0-9]+$/.test(value) || parsed > 65535) throw new InvalidArgumentError('must be a port number, 0 to 65535 (0 picks a free one)');
  return parsed;
}

const program = new Command()
  .name('usher')
  .description('Postgres-native job queue with strict FIFO lanes and admission control')
  .showHelpAfterError();

program.command('migrate')
  .description('apply migrations/ and re-apply sql/ (safe to run from several processes at once)')
  .action(runMigrate);

program.command('executor')
  .description('run the admission and time-keeping process')
  .option('--name <name>', 'name shown in pg_stat_activity')
  .action(runExecutor);

program.command('worker')
  .description('claim and run executions of the actions found in a packs folder')
  .requiredOption('--packs <dir>', 'folder of <pack>/<name>.mjs|.js|.ts handlers')
  .option('--concurrency <n>', 'executions run at once (default USHER_WORKER_CONCURRENCY)', positiveInteger)
  .option('--prefetch <n>', 'executions claimed ahead beyond --concurrency (default USHER_WORKER_PREFETCH, 0)', nonNegativeInteger)
  .option('--name <name>', 'worker name (default host:pid)')
  .action(runWorker);

program.command('api')
  .description('serve the HTTP API (JSON under /api/v1; bearer tokens from USHER_API_TOKENS)')
  .option('--port <n>', 'port to listen on (default USHER_API_PORT, 8080)', port)
  .option('--host <host>', 'address to listen on (default USHER_API_HOST, 127.0.0.1)')
  .action(runApi);

program.command('start')
  .description('everything in one process tree: migrate, an executor, a worker on the example packs and the HTTP API')
  .option('--packs <dir>', 'packs folder for the worker (default: the bundled examples)')
  .action(runStart);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const message = error instanceof UsherError ? `${error.code}: ${error.message}` : String((error as Error)?.stack ?? error);
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause.message : undefined;
  process.stderr.write(`${JSON.stringify({ ts: new Date().toISOString(), level: 'fatal', event: 'process:failed', msg: message, cause })}\n`);
  process.exit(1);
}
