/**
 * The real API app on a real listening server (127.0.0.1, port 0) over a test database. Every
 * response is checked against the schema the OpenAPI document gives for it, so a test that passes
 * also shows the document tells the truth.
 */
import { Writable } from 'node:stream';
import type pg from 'pg';
import pino from 'pino';
import { expect } from 'vitest';
import { apiPrefix } from '../../src/api/app.ts';
import { errorBodySchema } from '../../src/api/errors.ts';
import type { Route } from '../../src/api/route.ts';
import { allRoutes } from '../../src/api/routes/index.ts';
import type { RateLimit } from '../../src/api/load-limits.ts';
import { startApiServer, type ApiServer } from '../../src/api/server.ts';
import type { ApiToken } from '../../src/config.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

export const READ_TOKEN = 'read-token-0123456789abcdef';
export const WRITE_TOKEN = 'write-token-0123456789abcdef';
export const ADMIN_TOKEN = 'admin-token-0123456789abcdef';
export const tokens: ApiToken[] = [
  { role: 'read', token: READ_TOKEN }, { role: 'write', token: WRITE_TOKEN }, { role: 'admin', token: ADMIN_TOKEN },
];

export type Json = any;

export interface ApiResponse {
  readonly status: number;
  readonly body: Json;
  readonly headers: Headers;
}

export interface RequestOptions {
  /** Bearer token; default the admin token (every route). null sends no Authorization header. */
  readonly token?: string | null;
  /** Sent as JSON. */
  readonly body?: unknown;
  /** Sent as is (with the content type given in headers). */
  readonly rawBody?: string;
  readonly headers?: Record<string, string>;
}

export interface TestApi {
  readonly t: TestDatabase;
  readonly server: ApiServer;
  /** Base URL with /api/v1. */
  readonly base: string;
  /** Parsed log lines of the app. */
  readonly logs: Record<string, unknown>[];
  request(method: string, path: string, options?: RequestOptions): Promise<ApiResponse>;
  close(): Promise<void>;
}

export function captureLogger(lines: Record<string, unknown>[]): pino.Logger {
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return pino({ level: 'info', messageKey: 'msg', formatters: { level: (label) => ({ level: label }) } }, stream);
}

const documented: Route[] = allRoutes(() => ({}));

/** The route express would pick for a method and path (first match in order), as the schemas know it. */
export function routeFor(method: string, path: string): Route | undefined {
  const bare = path.split('?')[0]!.slice(apiPrefix.length);
  return documented.find((route) => route.method === method.toLowerCase()
    && new RegExp(`^${route.path.replace(/\{[a-z_]+\}/g, '[^/]+').replaceAll('.', '\\.')}/?$`).test(bare));
}

function checkDocumented(method: string, path: string, response: ApiResponse): void {
  if (response.status >= 400) {
    const parsed = errorBodySchema.safeParse(response.body);
    expect(parsed.success, `error body of ${method} ${path}: ${JSON.stringify(response.body)}`).toBe(true);
    expect(response.body.error.request_id).toBe(response.headers.get('x-request-id'));
    return;
  }
  const route = routeFor(method, path);
  expect(route, `${method} ${path} answered ${response.status} but no documented route matches it`).toBeDefined();
  expect([route!.status, ...(route!.otherStatuses ?? [])]).toContain(response.status);
  const parsed = route!.response.safeParse(response.body);
  expect(parsed.error?.issues ?? [], `response of ${method} ${path} differs from its documented schema`).toEqual([]);
}

export async function startTestApi(options: {
  apiTokens?: ApiToken[]; database?: TestDatabase; pool?: pg.Pool; maxWaiting?: number; rateLimit?: RateLimit;
} = {}): Promise<TestApi> {
  const t = options.database ?? await createTestDatabase();
  const logs: Record<string, unknown>[] = [];
  const server = await startApiServer({
    pool: options.pool ?? t.pool, log: captureLogger(logs), tokens: options.apiTokens ?? tokens, host: '127.0.0.1', port: 0,
    databaseUrl: t.url, maxWaiting: options.maxWaiting, rateLimit: options.rateLimit,
  });
  const base = `${server.url}${apiPrefix}`;
  return {
    t,
    server,
    base,
    logs,
    async request(method, path, { token = ADMIN_TOKEN, body, rawBody, headers = {} } = {}) {
      const sent: Record<string, string> = { ...headers };
      if (token !== null) sent.authorization = `Bearer ${token}`;
      if (body !== undefined) sent['content-type'] ??= 'application/json';
      const res = await fetch(`${base}${path}`, {
        method,
        headers: sent,
        body: rawBody ?? (body === undefined ? undefined : JSON.stringify(body)),
      });
      const contentType = res.headers.get('content-type') ?? '';
      const produces = res.status < 400 ? routeFor(method, `${apiPrefix}${path}`)?.produces : undefined;
      if (produces !== undefined) {
        // A stream never ends by itself: the headers are the answer here (stream tests read the body).
        expect(contentType.startsWith(produces.split(';')[0]!), `${method} ${path} must answer ${produces}`).toBe(true);
        const text = produces === 'text/event-stream' ? await res.body?.cancel().then(() => '') : await res.text();
        return { status: res.status, body: text, headers: res.headers };
      }
      const text = await res.text();
      let parsed: Json = text;
      try {
        parsed = text === '' ? undefined : JSON.parse(text);
      } catch {
        // Left as text: the assertions below will say so.
      }
      const response = { status: res.status, body: parsed, headers: res.headers };
      expect(contentType, `${method} ${path} must answer JSON`).toMatch(/^application\/json/);
      checkDocumented(method, `${apiPrefix}${path}`, response);
      return response;
    },
    async close() {
      await server.close();
      if (!options.database) await t.drop();
    },
  };
}

/**
 * Every base table of the usher schema with its row count and a hash of its contents: equal
 * snapshots mean nothing was inserted, updated or deleted.
 */
export async function snapshot(pool: pg.Pool): Promise<Record<string, string>> {
  // The event log is left out: the API moves committed changes into it at any moment. So is the
  // audit log, which records every admin request that passed authorization, refused or not (tests
  // of it count its rows).
  const { rows: tables } = await pool.query<{ name: string }>(
    `select table_name as name from information_schema.tables
     where table_schema = 'usher' and table_type = 'BASE TABLE'
       and table_name not in ('execution_transitions', 'execution_events', 'execution_event_sequencer', 'api_audit_log')
     order by table_name`);
  const result: Record<string, string> = {};
  for (const { name } of tables) {
    const { rows } = await pool.query<{ n: string; digest: string }>(
      `select count(*) as n, coalesce(md5(string_agg(t::text, '|' order by t::text)), '') as digest from usher.${name} t`);
    result[name] = `${rows[0]!.n}:${rows[0]!.digest}`;
  }
  return result;
}
