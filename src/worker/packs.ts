/**
 * Loads handlers from a packs folder: `<dir>/<pack>/<name>.mjs|.js|.ts` is the handler of action
 * `<pack>.<name>`. A handler module default-exports `async (params, ctx) => result` and may export
 * `description` and `timeout_seconds`, used when the action is first registered.
 */
import { readdir, readFile } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { UsherError } from '../errors.ts';
import type { ActionRegistration } from '../queue/worker-calls.ts';
import type { Handler } from './runner.ts';

export interface LoadedAction extends ActionRegistration {
  readonly handler: Handler;
  readonly file: string;
}

const namePart = /^[a-z][a-z0-9_-]*$/;
const handlerExtensions = new Set(['.mjs', '.js', '.ts']);

export async function loadPacks(dir: string): Promise<LoadedAction[]> {
  const root = resolve(dir);
  let packs;
  try {
    packs = await readdir(root, { withFileTypes: true });
  } catch (error) {
    throw new UsherError('pack_invalid', `cannot read packs folder ${root}`, { cause: error });
  }
  const actions: LoadedAction[] = [];
  for (const pack of packs.filter((entry) => entry.isDirectory()).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!namePart.test(pack.name)) {
      throw new UsherError('pack_invalid', `pack folder ${join(root, pack.name)}: name must be lowercase letters, digits, _ or -`);
    }
    const files = (await readdir(join(root, pack.name))).filter((file) => handlerExtensions.has(extname(file)) && !file.endsWith('.d.ts')).sort();
    for (const file of files) {
      const path = join(root, pack.name, file);
      if (await needsTypescript(path)) await ensureTypescriptLoader();
      actions.push(await loadHandler(path, pack.name));
    }
  }
  return actions;
}

const typescriptLoader = Symbol.for('usher.typescript_loader');

/** Whether this process loads TypeScript through tsx (the sources run so, or a pack needed it). */
export function typescriptLoaderActive(): boolean {
  return Boolean((globalThis as Record<symbol, unknown>)[typescriptLoader]);
}

/** TypeScript needs tsx, which the compiled CLI does not load until a pack asks for it. */
async function ensureTypescriptLoader(): Promise<void> {
  const global = globalThis as Record<symbol, unknown>;
  if (global[typescriptLoader]) return;
  const { register } = await import('tsx/esm/api');
  register();
  global[typescriptLoader] = true;
}

// A JavaScript handler that imports TypeScript directly (`from './shared.ts'`).
const typescriptImport = /(?:\bfrom|\bimport)\s*\(?\s*['"][^'"]+\.[cm]?tsx?['"]/;

/**
 * Whether a handler needs the TypeScript loader. Decided before the first import: Node keeps a
 * failed import of a .ts file, so loading the loader afterwards would not help.
 */
async function needsTypescript(path: string): Promise<boolean> {
  return extname(path) === '.ts' || typescriptImport.test(await readFile(path, 'utf8'));
}

async function loadHandler(path: string, pack: string): Promise<LoadedAction> {
  const name = basename(path, extname(path));
  if (!namePart.test(name)) {
    throw new UsherError('pack_invalid', `handler ${path}: file name must be lowercase letters, digits, _ or - (it becomes the action name)`);
  }
  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (error) {
    throw new UsherError('pack_invalid', `handler ${path} failed to load: ${(error as Error).message}`, { cause: error });
  }
  const handler = module.default;
  if (typeof handler !== 'function') {
    throw new UsherError('pack_invalid', `handler ${path} must default-export a function (params, ctx) => result`);
  }
  const timeout = module.timeout_seconds;
  if (timeout !== undefined && !(Number.isInteger(timeout) && (timeout as number) > 0)) {
    throw new UsherError('pack_invalid', `handler ${path}: timeout_seconds must be a positive integer`);
  }
  return {
    ref: `${pack}.${name}`,
    file: path,
    handler: handler as Handler,
    ...(typeof module.description === 'string' ? { description: module.description } : {}),
    ...(timeout !== undefined ? { timeout_seconds: timeout as number } : {}),
  };
}
