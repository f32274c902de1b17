/**
 * Bearer-token authentication. Tokens come from USHER_API_TOKENS as `role:token` pairs: a `read`
 * token may call read routes, a `write` token every route. With no tokens configured the API is open
 * (only allowed on a loopback address, see server.ts). A presented token is hashed and compared with
 * the hash of every configured token in constant time, all of them every time, so neither the
 * timing of one comparison nor the number of comparisons tells how close a guess was.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiRole, ApiToken } from '../config.ts';
import { ApiError } from './errors.ts';

/** Who may call a route: anyone (health, readiness, the OpenAPI document), a read token, or a write token. */
export type Access = 'public' | ApiRole;

export interface Authenticator {
  /** True when no token is configured and every request is allowed. */
  readonly open: boolean;
  /** The role of the request's Authorization header; throws a 401 or 403 ApiError when it may not call `access`. */
  authorize(authorization: string | undefined, access: Access): ApiRole | undefined;
  /**
   * Who the request is for rate limiting: `token:<n>` for the n-th configured token, undefined
   * without a valid one (the caller then counts by address, so guessing tokens is limited too).
   */
  tokenKey(authorization: string | undefined): string | undefined;
}

const digest = (token: string) => createHash('sha256').update(token, 'utf8').digest();
const bearer = /^Bearer +([A-Za-z0-9._~+/=-]+) *$/i;

export function createAuthenticator(tokens: readonly ApiToken[]): Authenticator {
  const known = tokens.map((entry) => ({ role: entry.role, hash: digest(entry.token) }));
  const open = known.length === 0;

  function indexOf(token: string): number {
    const presented = digest(token);
    let found = -1;
    known.forEach((entry, index) => {
      if (timingSafeEqual(presented, entry.hash)) found = index;
    });
    return found;
  }
  const roleOf = (token: string): ApiRole | undefined => known[indexOf(token)]?.role;

  return {
    open,
    authorize(authorization, access) {
      if (access === 'public') return undefined;
      if (open) return 'write';
      const challenge = (error?: string) => ({ 'WWW-Authenticate': `Bearer realm="usher"${error ? `, error="${error}"` : ''}` });
      if (authorization === undefined || authorization.trim() === '') {
        throw new ApiError('unauthorized', 'missing bearer token: send Authorization: Bearer <token>', { headers: challenge() });
      }
      const match = bearer.exec(authorization);
      if (!match) {
        throw new ApiError('unauthorized', 'malformed Authorization header: expected Bearer <token>', { headers: challenge('invalid_request') });
      }
      const role = roleOf(match[1]!);
      if (!role) throw new ApiError('unauthorized', 'invalid bearer token', { headers: challenge('invalid_token') });
      if (access === 'write' && role !== 'write') {
        throw new ApiError('forbidden', 'this route changes data and needs a write token; the token given may only read',
          { headers: challenge('insufficient_scope') });
      }
      return role;
    },
    tokenKey(authorization) {
      const match = authorization === undefined ? null : bearer.exec(authorization);
      const index = match ? indexOf(match[1]!) : -1;
      return index < 0 ? undefined : `token:${index}`;
    },
  };
}
