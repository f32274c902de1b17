/** Liveness, readiness and the OpenAPI document: open to anyone, so probes and tools need no token. */
import { z } from 'zod';
import { schemaStatus } from '../../db/migrator.ts';
import { ApiError } from '../errors.ts';
import { healthSchema, one as oneOf, readySchema } from '../resources.ts';
import { defineRoute, one, type Route } from '../route.ts';

export function systemRoutes(openapi: () => unknown): Route[] {
  return [
    defineRoute({
      method: 'get', path: '/health', access: 'public', operationId: 'health', tag: 'system',
      summary: 'Liveness: the API process answers',
      description: 'Touches nothing else; use /ready to know whether the database is usable.',
      status: 200, response: oneOf(healthSchema),
      async handle() {
        return { body: one({ status: 'ok' }) };
      },
    }),
    defineRoute({
      method: 'get', path: '/ready', access: 'public', operationId: 'ready', tag: 'system',
      summary: 'Readiness: database reachable and schema up to date',
      description: 'Compares usher.schema_migrations with the migrations/ and sql/ files of this Usher. 503 (not_ready or '
        + 'database_unavailable) otherwise, naming what differs.',
      status: 200, response: oneOf(readySchema), errors: ['not_ready'],
      async handle({ deps }) {
        const status = await schemaStatus(deps.pool);
        if (!status.current) {
          const problems = [
            status.pending.length > 0 ? `pending migrations: ${status.pending.join(', ')}` : '',
            status.changed.length > 0 ? `migrations changed since applied: ${status.changed.join(', ')}` : '',
            status.unknown.length > 0 ? `migrations unknown to this Usher (a newer one migrated): ${status.unknown.join(', ')}` : '',
            status.definitions_current ? '' : 'sql/ definitions differ from the ones applied (run usher migrate)',
          ].filter(Boolean);
          throw new ApiError('not_ready', `schema is not up to date: ${problems.join('; ')}`);
        }
        return { body: one({ status: 'ready', database: 'reachable', schema_version: status.version ?? null }) };
      },
    }),
    defineRoute({
      method: 'get', path: '/openapi.json', access: 'public', operationId: 'openapi', tag: 'system',
      summary: 'This document (OpenAPI 3.1)',
      description: 'Generated from the zod schemas that validate the requests.',
      status: 200, response: z.record(z.string(), z.unknown()).meta({ description: 'An OpenAPI 3.1 document.' }),
      async handle() {
        return { body: openapi() };
      },
    }),
  ];
}
