/**
 * What keeps the API answering under more requests than it can serve: a limit per client (429) and
 * a bound on the requests waiting for a database connection (503). Both refuse before the route
 * reads its body or touches the database, so a refused request changes nothing, and both say
 * when to come back (Retry-After).
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ipKeyGenerator, rateLimit } from 'express-rate-limit';
import type pg from 'pg';
import type { Logger } from '../log.ts';
import type { Authenticator } from './auth.ts';
import { ApiError } from './errors.ts';

export interface RateLimit {
  /** Requests per client per window; 0 is no limit. */
  readonly limit: number;
  readonly windowSeconds: number;
}

/**
 * Fixed windows per client, counted in this process (each API process counts its own). A client is
 * its token; a request without a valid token counts against its address, so token guessing and
 * unauthenticated floods are limited as well.
 */
export function perClientRateLimit(settings: RateLimit, auth: Authenticator, log: Logger): RequestHandler {
  if (settings.limit === 0) return (_req, _res, next) => next();
  return rateLimit({
    windowMs: settings.windowSeconds * 1000,
    limit: settings.limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    keyGenerator: (req) => auth.tokenKey(req.get('authorization')) ?? `address:${ipKeyGenerator(req.ip ?? req.socket.remoteAddress ?? 'unknown')}`,
    handler: (_req, _res, next) => {
      next(new ApiError('rate_limited',
        `more than ${settings.limit} requests in ${settings.windowSeconds} s from this client; retry after the time in Retry-After`));
    },
    // The key is the token or express's own req.ip (trust proxy unset: the socket's address), so a
    // forwarded-for header from a client is ignored, as it should be, rather than reported on stderr.
    validate: { xForwardedForHeader: false },
    logger: {
      error: (err, message) => log.error({ event: 'api:rate_limit_failed', err }, message ?? 'rate limiter failed'),
      warn: (err, message) => log.warn({ event: 'api:rate_limit_warning', err }, message ?? 'rate limiter warning'),
    },
  });
}

/**
 * Refuses a request at once while `maxWaiting` others already wait for a database connection (with
 * 0, whenever it would have to wait). Past that, a new request could only wait out the pool's
 * connection timeout behind the others; a prompt 503 lets the client back off and keeps the
 * process's memory flat during a flood.
 */
export function shedWhenPoolBacklogged(pool: pg.Pool, maxWaiting: number): RequestHandler {
  const saturated = () => pool.idleCount === 0 && pool.totalCount >= (pool.options.max ?? 10);
  return (_req: Request, _res: Response, next: NextFunction) => {
    if (pool.waitingCount >= maxWaiting && saturated()) {
      throw new ApiError('overloaded', `the API is overloaded: ${pool.waitingCount} requests are waiting for a database connection`);
    }
    next();
  };
}
