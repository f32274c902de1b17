/**
 * The OpenAPI 3.1 document, generated from the route list and its zod schemas (zod 4's JSON Schema
 * output is draft 2020-12, which OpenAPI 3.1 uses as is). Schemas with an id (Execution, Policy, …)
 * become components and are referenced.
 */
import { z } from 'zod';
import { errorBodySchema, httpStatus, type ApiErrorCode } from './errors.ts';
import type { Route } from './route.ts';

type JsonSchema = Record<string, unknown>;

class Components {
  readonly schemas: Record<string, JsonSchema> = {};

  /** JSON Schema of a zod schema; its $defs move to components and refs follow them. */
  convert(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
    const generated = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
    const { $schema: _schema, $defs, ...rest } = generated;
    const rewrite = (value: JsonSchema) => JSON.parse(JSON.stringify(value).replaceAll('"#/$defs/', '"#/components/schemas/')) as JsonSchema;
    for (const [name, definition] of Object.entries(($defs ?? {}) as Record<string, JsonSchema>)) {
      this.schemas[name] ??= rewrite(definition);
    }
    return rewrite(rest);
  }
}

const commonErrors = (route: Route): ApiErrorCode[] => [
  ...(route.params || route.query || route.body ? ['invalid_request' as const] : []),
  ...(route.body ? ['invalid_json' as const, 'payload_too_large' as const, 'unsupported_media_type' as const] : []),
  ...(route.access === 'public' ? [] : ['unauthorized' as const, 'rate_limited' as const, 'overloaded' as const]),
  // A role below the route's, or (scope) a token limited to packs the request names none of.
  ...(route.access === 'write' || route.access === 'admin' || route.scope ? ['forbidden' as const] : []),
  ...(route.access === 'public' && !route.errors?.length ? [] : ['database_unavailable' as const]),
  'internal_error',
];

function parameters(components: Components, route: Route) {
  const result: JsonSchema[] = [];
  for (const [location, schema] of [['path', route.params], ['query', route.query], ['header', route.headers]] as const) {
    if (!schema) continue;
    const shape = (schema as z.ZodObject).shape as Record<string, z.ZodType>;
    for (const [name, field] of Object.entries(shape)) {
      const converted = components.convert(field, 'output');
      const { description, ...fieldSchema } = converted;
      result.push({
        name,
        in: location,
        required: location === 'path' || !field.safeParse(undefined).success,
        ...(description ? { description } : {}),
        schema: fieldSchema,
        ...(location === 'query' && fieldSchema.type === 'array' ? { style: 'form', explode: true } : {}),
      });
    }
  }
  return result;
}

function responses(components: Components, route: Route) {
  const result: Record<string, unknown> = {};
  const success = components.convert(route.response, 'output');
  for (const status of [route.status, ...(route.otherStatuses ?? [])]) {
    result[String(status)] = { description: status === 201 ? 'Created' : 'OK', content: { [route.produces ?? 'application/json']: { schema: success } } };
  }
  const byStatus = new Map<number, ApiErrorCode[]>();
  for (const code of new Set([...commonErrors(route), ...(route.errors ?? [])])) {
    byStatus.set(httpStatus[code], [...(byStatus.get(httpStatus[code]) ?? []), code]);
  }
  for (const [status, codes] of [...byStatus.entries()].sort(([a], [b]) => a - b)) {
    result[String(status)] = {
      description: `Error: ${codes.join(', ')}`,
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
    };
  }
  return result;
}

export function buildOpenApi(routes: readonly Route[], options: { version: string }) {
  const components = new Components();
  components.convert(errorBodySchema, 'output');
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const operation: Record<string, unknown> = {
      operationId: route.operationId,
      tags: [route.tag],
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      'x-usher-access': route.access,
      security: route.access === 'public' ? [] : [{ bearerAuth: [] }],
      parameters: parameters(components, route),
      ...(route.body ? {
        requestBody: {
          required: !route.body.safeParse(undefined).success,
          content: { 'application/json': { schema: components.convert(route.body, 'input') } },
        },
      } : {}),
      responses: responses(components, route),
    };
    (paths[`/api/v1${route.path}`] ??= {})[route.method] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Usher HTTP API',
      version: options.version,
      description: 'Postgres-native job queue with strict FIFO lanes and admission control. Read routes need a read, '
        + 'write or admin token, write routes a write or admin token, admin routes (x-usher-access: admin: actions, policies, '
        + 'lane controls) an admin token (Authorization: Bearer <token>); errors are { error: { code, message, '
        + 'request_id } }.',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    servers: [{ url: '/' }],
    tags: [...new Set(routes.map((route) => route.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: components.schemas,
      securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'A token from USHER_API_TOKENS.' } },
    },
  };
}
