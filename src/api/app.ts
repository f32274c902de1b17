/**
 * The HTTP API as an express app: JSON in and out under /api/v1, every input validated by the
 * route's zod schemas, bearer-token access per route, one error envelope for every failure
 * (errors.ts), and one log line per request (`http:request`) carrying its request id.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import express, { type NextFunction, type Request, type Response } from 'express';
import type pg from 'pg';
import { z } from 'zod';
import type { ApiToken } from '../config.ts';
import type { Logger } from '../log.ts';
import { auditAdminRequest } from './audit.ts';
import { createAuthenticator, type Authenticator, type Caller } from './auth.ts';
import { ApiError, toApiError } from './errors.ts';
import { perClientRateLimit, shedWhenPoolBacklogged, type RateLimit } from './load-limits.ts';
import { requirePack, requireWholeQueue } from './scope.ts';
import { buildOpenApi } from './openapi.ts';
import { expressPath, parseInput, type ApiDeps, type Route } from './route.ts';
import { allRoutes } from './routes/index.ts';
import type { ApiServices } from './services.ts';

/** What a 503 tells clients to wait before trying again: about a database reconnect's backoff. */
const RETRY_AFTER_SECONDS = 2;

export const apiPrefix = '/api/v1';

export interface ApiOptions {
  readonly pool: pg.Pool;
  readonly log: Logger;
  /** Empty: the API is open (the server refuses that on a non-loopback address). */
  readonly tokens: readonly ApiToken[];
  /** Largest accepted request body, in bytes (default 1 MiB). */
  readonly bodyLimitBytes?: number;
  /** Requests per client per window (429 beyond); absent or 0: no limit. */
  readonly rateLimit?: RateLimit;
  /** Requests that may wait for a pool connection before the next gets 503 `overloaded` (default 100). */
  readonly maxWaiting?: number;
}

const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const noQuery = z.strictObject({});
const safeRequestId = /^[A-Za-z0-9._:-]{1,64}$/;
/** Answered probes log at debug, so a load balancer polling them does not flood the log. */
const probes = new Set(['GET /health', 'GET /ready']);

export function createApp(options: ApiOptions, services: ApiServices): express.Express {
  const deps: ApiDeps = { pool: options.pool, log: options.log, events: services.events, metrics: services.metrics, closing: services.closing };
  const auth = createAuthenticator(options.tokens);
  let document: unknown;
  const routes = allRoutes(() => (document ??= buildOpenApi(routes, { version })));

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestLog(options.log));
  const limits: RouteLimits = {
    perClient: perClientRateLimit(options.rateLimit ?? { limit: 0, windowSeconds: 1 }, auth, options.log),
    shed: shedWhenPoolBacklogged(options.pool, options.maxWaiting ?? 100),
  };
  app.use(apiPrefix, apiRouter(routes, deps, auth, limits, options.bodyLimitBytes ?? 1024 * 1024));
  app.use((req: Request, _res: Response, next: NextFunction) => {
    next(new ApiError('not_found', `no route ${req.method} ${req.path.slice(0, 200)}`));
  });
  app.use(errorHandler(options.log));
  return app;
}

interface RouteLimits {
  readonly perClient: express.RequestHandler;
  readonly shed: express.RequestHandler;
}

function apiRouter(routes: readonly Route[], deps: ApiDeps, auth: Authenticator, limits: RouteLimits, bodyLimit: number): express.Router {
  const router = express.Router({ caseSensitive: true, strict: false });
  const parseJson = express.json({ limit: bodyLimit, strict: true, type: 'application/json' });
  // Routes of one path together, then a 405 for that path's other methods.
  const paths = [...new Set(routes.map((route) => route.path))];
  for (const path of paths) {
    const ofPath = routes.filter((route) => route.path === path);
    for (const route of ofPath) {
      // Probes and the OpenAPI document stay answerable whatever the load: no limit, no database wait.
      const guarded = route.access !== 'public';
      router[route.method](
        expressPath(path),
        (_req: Request, res: Response, next: NextFunction) => {
          res.locals.route = `${route.method.toUpperCase()} ${route.path}`;
          next();
        },
        ...(guarded ? [limits.perClient] : []),
        (req: Request, res: Response, next: NextFunction) => {
          res.locals.caller = auth.authorize(req.get('authorization'), route.access);
          next();
        },
        ...(guarded ? [limits.shed] : []),
        ...(route.body ? [requireJsonBody, parseJson] : []),
        async (req: Request, res: Response) => {
          if (route.headers) parseInput(route.headers, req.headers, 'header');
          const input = {
            params: parseInput(route.params, req.params, 'path'),
            query: parseInput(route.query ?? noQuery, req.query, 'query'),
            body: parseInput(route.body, req.body, 'body'),
            deps,
            requestId: String(res.locals.requestId),
            header: (name: string) => req.get(name),
            caller: res.locals.caller as Caller | undefined,
          };
          if (route.scope === 'queue') requireWholeQueue(input.caller);
          else if (route.scope) {
            const named = route.scope(input as never);
            for (const one of 'pack' in named ? [named] : named) requirePack(input.caller, one.pack, one.what);
          }
          if (route.access === 'admin') {
            await auditAdminRequest(deps.pool, deps.log, {
              caller: input.caller!, operation: route.operationId, method: req.method, path: req.baseUrl + req.path,
              params: input.params as Record<string, unknown> | undefined, body: input.body as Record<string, unknown> | undefined,
              requestId: input.requestId,
            }, res);
          }
          const reply = await route.handle(input as never);
          if ('send' in reply) await reply.send(req, res);
          else res.status(reply.status ?? route.status).json(reply.body);
        },
      );
    }
    const allowed = [...new Set(ofPath.flatMap((route) => (route.method === 'get' ? ['GET', 'HEAD'] : [route.method.toUpperCase()])))];
    router.all(expressPath(path), (req: Request) => {
      throw new ApiError('method_not_allowed', `${req.method} is not allowed on ${apiPrefix}${path}; use ${allowed.join(', ')}`,
        { headers: { Allow: allowed.join(', ') } });
    });
  }
  return router;
}

/** A request that carries a body must say it is JSON; one without a body goes on to validation. */
function requireJsonBody(req: Request, _res: Response, next: NextFunction): void {
  const length = req.headers['content-length'];
  const hasBody = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  if (hasBody && req.is('application/json') === false) {
    throw new ApiError('unsupported_media_type', 'request body must be JSON, sent with Content-Type: application/json');
  }
  next();
}

function requestLog(log: Logger) {
  return (req: Request, res: Response, next: NextFunction) => {
    const inbound = req.get('x-request-id');
    const requestId = inbound !== undefined && safeRequestId.test(inbound) ? inbound : randomUUID();
    res.locals.requestId = requestId;
    res.setHeader('X-Request-Id', requestId);
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const fields = {
        event: 'http:request',
        request_id: requestId,
        method: req.method,
        path: req.path.slice(0, 500),
        route: res.locals.route as string | undefined,
        status: res.statusCode,
        duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        error_code: res.locals.errorCode as string | undefined,
      };
      if (res.statusCode >= 500) log.warn(fields, 'request failed');
      else if (probes.has(fields.route ?? '') && res.statusCode < 400) log.debug(fields, 'probe');
      else log.info(fields, 'request');
    });
    next();
  };
}

function errorHandler(log: Logger) {
  return (error: unknown, req: Request, res: Response, _next: NextFunction) => {
    const apiError = toApiError(error);
    const requestId = String(res.locals.requestId);
    res.locals.errorCode = apiError.code;
    // A shed request is expected under a flood and has no cause to show: the request line says it.
    if (apiError.status >= 500 && apiError.code !== 'overloaded') {
      log.error({
        event: 'http:failed', request_id: requestId, method: req.method, path: req.path.slice(0, 500), code: apiError.code,
        err: apiError.cause ?? error,
      }, 'request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const message = apiError.code === 'internal_error'
      ? `internal error; the server log has the details under request_id ${requestId}`
      : apiError.message;
    // A 503 is worth retrying: say when (RFC 9110 Retry-After, in seconds).
    const headers = apiError.status === 503 ? { 'Retry-After': String(RETRY_AFTER_SECONDS), ...apiError.headers } : apiError.headers;
    res.status(apiError.status).set(headers).json({
      error: { code: apiError.code, message, request_id: requestId, ...(apiError.details ? { details: apiError.details } : {}) },
    });
  };
}
