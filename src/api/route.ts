/**
 * Routes are data: method, path, who may call it, the zod schemas of its inputs and response, and a
 * handler. app.ts mounts them and openapi.ts documents them from the same list, so every route that
 * exists is documented and every documented input is the one validated.
 */
import type { Request, Response } from 'express';
import type pg from 'pg';
import { z } from 'zod';
import type { Logger } from '../log.ts';
import type { EventFollower } from './event-follower.ts';
import type { ApiMetrics } from './metrics.ts';
import type { Access, Caller } from './auth.ts';
import { validationError, type ApiErrorCode, type FieldProblem } from './errors.ts';

export interface ApiDeps {
  readonly pool: pg.Pool;
  readonly log: Logger;
  readonly events: EventFollower;
  readonly metrics: ApiMetrics;
  /** Fires when the server closes: long responses (event streams) end. */
  readonly closing: AbortSignal;
}

export type Reply =
  | {
    /** Defaults to the route's `status`. */
    readonly status?: number;
    readonly body: unknown;
  }
  | {
    /** Writes the response itself, for routes that do not answer JSON (see `produces`). */
    readonly send: (req: Request, res: Response) => Promise<void>;
  };

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface RouteInput<P, Q, B> {
  readonly params: Out<P>;
  readonly query: Out<Q>;
  readonly body: Out<B>;
  readonly deps: ApiDeps;
  readonly requestId: string;
  /** A request header by name (case-insensitive). */
  readonly header: (name: string) => string | undefined;
  /** Who called (role, actor, packs the token is limited to); undefined on public routes. */
  readonly caller: Caller | undefined;
}

interface RouteShape<P, Q, B> {
  readonly method: 'get' | 'post' | 'put' | 'delete';
  /** OpenAPI form, below /api/v1: `/executions/{id}`. */
  readonly path: string;
  readonly access: Access;
  readonly operationId: string;
  readonly tag: string;
  readonly summary: string;
  readonly description?: string;
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  /** Request headers the route reads (lower-case names), validated like the other inputs; others are ignored. */
  readonly headers?: z.ZodObject;
  /** Success status, and other success statuses the route can answer with. */
  readonly status: number;
  readonly otherStatuses?: readonly number[];
  readonly response: z.ZodType;
  /** Media type of a success response when it is not JSON. */
  readonly produces?: 'text/plain; version=0.0.4' | 'text/event-stream';
  /** Error codes this route can answer with beyond the common ones (validation, auth, 5xx). */
  readonly errors?: readonly ApiErrorCode[];
  /**
   * What the route is about, for a token limited to packs (scope.ts): `queue`, the whole queue
   * (refused to such a token), or the pack its inputs name (null: the global scope), refused before
   * the handler runs when outside the token's packs; a request that names several (a batch) is
   * refused when any is outside. Routes without it filter by the caller's packs themselves, or
   * reach things by id and check them once read.
   */
  readonly scope?: 'queue' | ((input: Pick<RouteInput<P, Q, B>, 'params' | 'query' | 'body'>) => NamedScope | readonly NamedScope[]);
  readonly handle: (input: RouteInput<P, Q, B>) => Promise<Reply>;
}

/** The pack a request names (null: the global scope), and how to call it in a refusal. */
export interface NamedScope {
  readonly pack: string | null;
  readonly what: string;
}

export type Route = RouteShape<z.ZodType | undefined, z.ZodType | undefined, z.ZodType | undefined>;

/** Declares a route; the handler's inputs are typed from the schemas. */
export function defineRoute<
  P extends z.ZodType | undefined = undefined,
  Q extends z.ZodType | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
>(route: RouteShape<P, Q, B>): Route {
  return route as unknown as Route;
}

/** Validates one input against its schema; a route without a schema for it gets undefined. */
export function parseInput(schema: z.ZodType | undefined, value: unknown, location: FieldProblem['location']): unknown {
  if (!schema) return undefined;
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw validationError(location, parsed.error.issues);
  return parsed.data;
}

/** `/executions/{id}` as an express path: `/executions/:id`. */
export function expressPath(path: string): string {
  return path.replace(/\{([a-z_]+)\}/g, ':$1');
}

export function one(data: unknown, message?: string): { data: unknown; message?: string } {
  return message === undefined ? { data } : { data, message };
}

export function page(rows: unknown[], totalItems: number, request: { page: number; per_page: number }) {
  return {
    data: rows,
    pagination: {
      page: request.page,
      page_size: request.per_page,
      total_items: totalItems,
      total_pages: Math.ceil(totalItems / request.per_page),
    },
  };
}
