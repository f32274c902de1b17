/**
 * Tokens limited to packs (`write@billing+ops:token`). A request that names something outside the
 * token's packs (an action, a pack, a lane, a policy's scope) is refused with 403 before anything is
 * read, whether or not that thing exists, so the answer tells nothing about what exists elsewhere.
 * Things reached by id or by a policy's ref are read first, and one outside the packs answers the
 * same 404 as one that does not exist. Lists, counts and the event stream show only the token's
 * packs, and routes about the whole queue (workers, metrics, queue statistics, all policies) are
 * refused.
 */
import type { Caller } from './auth.ts';
import { ApiError } from './errors.ts';
import type { NamedScope } from './route.ts';

/** The pack of an action ref (`billing.charge` → `billing`). */
export const packOf = (actionRef: string): string => actionRef.slice(0, actionRef.indexOf('.'));

/** The packs a caller is limited to, as a list for a query; undefined: every pack. */
export function allowedPacks(caller: Caller | undefined): string[] | undefined {
  return caller?.packs ? [...caller.packs].sort() : undefined;
}

export function packInScope(caller: Caller | undefined, pack: string | null): boolean {
  return !caller?.packs || (pack !== null && caller.packs.has(pack));
}

export const actionInScope = (caller: Caller | undefined, actionRef: string): boolean => packInScope(caller, packOf(actionRef));

function outside(caller: Caller, what: string): ApiError {
  return new ApiError('forbidden', `this token is limited to the packs ${allowedPacks(caller)!.join(', ')}; ${what} is outside them`,
    { headers: { 'WWW-Authenticate': 'Bearer realm="usher", error="insufficient_scope"' } });
}

/** Refuses a named pack (null: the global scope) outside the caller's packs. */
export function requirePack(caller: Caller | undefined, pack: string | null, what: string): void {
  if (!packInScope(caller, pack)) throw outside(caller!, what);
}

export const actionScope = (actionRef: string): NamedScope => ({ pack: packOf(actionRef), what: `action ${actionRef}` });

export const packScope = (pack: string): NamedScope => ({ pack, what: `pack ${pack}` });

/** A lane key's pack (`action:pack.name#…`, `pack:pack#…`); the global lane has none. */
export function laneScope(laneKey: string): NamedScope {
  const scope = laneKey.split('#')[0]!;
  const pack = scope.startsWith('action:') ? packOf(scope.slice('action:'.length))
    : scope.startsWith('pack:') ? scope.slice('pack:'.length) : null;
  return { pack, what: `lane ${laneKey}` };
}

/** Refuses a route about the whole queue to a token limited to packs. */
export function requireWholeQueue(caller: Caller | undefined): void {
  if (caller?.packs) throw outside(caller, 'this route reads the whole queue, which');
}
