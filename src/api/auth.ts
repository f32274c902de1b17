/**
 * Bearer-token authentication. Tokens come from USHER_API_TOKENS as `role:token` pairs. Roles are
 * ranked: a `read` token may call read routes, a `write` token also enqueues, cancels and retries
 * executions, an `admin` token also changes how the queue runs (actions, policies, lane controls).
 * With no tokens configured the API is open (only allowed on a loopback address, see server.ts). A
 * presented token is hashed and compared with the hash of every configured token in constant time,
 * all of them every time, so neither the timing of one comparison nor the number of comparisons
 * tells how close a guess was.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiRole, ApiToken } from '../config.ts';
import { ApiError } from './errors.ts';

/** Who may call a route: anyone (health, readiness, the OpenAPI document), or a token of at least that role. */
export type Access = 'public' | ApiRole;

/** The caller of a request that passed authorization. */
export interface Caller {
  readonly role: ApiRole;
  /**
   * `token:<fingerprint>` (the first 12 hex digits of the token's SHA-256, which names a token without
   * revealing it: `printf %s "$TOKEN" | sha256sum | cut -c1-12`), or `open` when no token is configured.
   */
  readonly actor: string;
  /** The packs the token is limited to (USHER_API_TOKENS `role@pack+pack:token`); undefined: all of them. */
  readonly packs: ReadonlySet<string> | undefined;
}

export interface Authenticator {
  /** True when no token is configured and every request is allowed. */
  readonly open: boolean;
  /** The caller of the request's Authorization header; throws a 401 or 403 ApiError when it may not call `access`. */
  authorize(authorization: string | undefined, access: Access): Caller | undefined;
  /**
   * The actor of a valid token, for rate limiting; undefined without one (the caller then counts by
   * address, so guessing tokens is limited too).
   */
  tokenKey(authorization: string | undefined): string | undefined;
}

const rank: Record<ApiRole, number> = { read: 1, write: 2, admin: 3 };

const refusal: Record<Exclude<ApiRole, 'read'>, string> = {
  write: 'this route changes data and needs a write or admin token; the token given may only read',
  admin: 'this route changes how the queue runs (actions, policies, lanes, schedules) and needs an admin token',
};

const digest = (token: string) => createHash('sha256').update(token, 'utf8').digest();
const bearer = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i;

export function createAuthenticator(tokens: readonly ApiToken[]): Authenticator {
  const known = tokens.map((entry) => {
    const hash = digest(entry.token);
    return {
      role: entry.role, hash, actor: `token:${hash.toString('hex').slice(0, 12)}`, packs: entry.packs ? new Set(entry.packs) : undefined,
    };
  });
  const open = known.length === 0;

  function find(authorization: string | undefined): (typeof known)[number] | undefined {
    const match = authorization === undefined ? null : bearer.exec(authorization);
    if (!match) return undefined;
    const presented = digest(match[1]!);
    let found: (typeof known)[number] | undefined;
    for (const entry of known) {
      if (timingSafeEqual(presented, entry.hash)) found = entry;
    }
    return found;
  }

  return {
    open,
    authorize(authorization, access) {
      if (access === 'public') return undefined;
      if (open) return { role: 'admin', actor: 'open', packs: undefined };
      const challenge = (error?: string) => ({ 'WWW-Authenticate': `Bearer realm="usher"${error ? `, error="${error}"` : ''}` });
      if (authorization === undefined || authorization.trim() === '') {
        throw new ApiError('unauthorized', 'missing bearer token: send Authorization: Bearer <token>', { headers: challenge() });
      }
      if (!bearer.test(authorization)) {
        throw new ApiError('unauthorized', 'malformed Authorization header: expected Bearer <token>', { headers: challenge('invalid_request') });
      }
      const entry = find(authorization);
      if (!entry) throw new ApiError('unauthorized', 'invalid bearer token', { headers: challenge('invalid_token') });
      if (rank[entry.role] < rank[access]) {
        throw new ApiError('forbidden', refusal[access as Exclude<ApiRole, 'read'>], { headers: challenge('insufficient_scope') });
      }
      return { role: entry.role, actor: entry.actor, packs: entry.packs };
    },
    tokenKey: (authorization) => find(authorization)?.actor,
  };
}
