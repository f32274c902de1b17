import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Validator } from '@seriousme/openapi-schema-validator';
import { createApp } from '../../src/api/app.ts';
import { createApiServices } from '../../src/api/services.ts';
import { allRoutes } from '../../src/api/routes/index.ts';
import { createLogger } from '../../src/log.ts';
import { executionColumns } from '../../src/queue/executions-read.ts';
import { READ_TOKEN, startTestApi, tokens, type Json, type TestApi } from '../support/api.ts';

let api: TestApi;
let doc: Json;

beforeAll(async () => {
  api = await startTestApi();
  const res = await api.request('GET', '/openapi.json', { token: null });
  expect(res.status).toBe(200);
  doc = res.body;
});
afterAll(() => api.close());

/** The routes express really serves, read from the app's router: "GET /api/v1/executions/{id}". */
function servedRoutes(): string[] {
  const pool = new pg.Pool();
  const log = createLogger('silent');
  const app = createApp({ pool, log, tokens }, createApiServices({ pool, log, databaseUrl: '' }));
  const stack = (app as unknown as { router: { stack: Json[] } }).router.stack;
  const mounted = stack.filter((layer) => layer.handle?.stack);
  expect(mounted).toHaveLength(1);
  return mounted[0].handle.stack
    .filter((layer: Json) => layer.route)
    .flatMap((layer: Json) => Object.keys(layer.route.methods).filter((method) => method !== '_all')
      .map((method) => `${method.toUpperCase()} /api/v1${String(layer.route.path).replace(/:([a-z_]+)/g, '{$1}')}`))
    .sort();
}

function documentedRoutes(): string[] {
  return Object.entries(doc.paths as Record<string, Record<string, unknown>>)
    .flatMap(([path, operations]) => Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`))
    .sort();
}

describe('the OpenAPI document', () => {
  it('is OpenAPI 3.1 and lists exactly the routes the app serves', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info).toMatchObject({ title: 'Usher HTTP API', version: '0.1.0' });
    const served = servedRoutes();
    expect(served.length).toBe(37);
    expect(documentedRoutes()).toEqual(served);
  });

  it('validates against the OpenAPI 3.1 schema (and the validator does refuse a broken document)', async () => {
    const validator = new Validator();
    expect(await validator.validate(structuredClone(doc))).toEqual({ valid: true });
    expect(validator.version).toBe('3.1');
    const broken = structuredClone(doc);
    broken.paths['/api/v1/executions'].get.parameters[0].in = 'body';
    expect((await new Validator().validate(broken)).valid).toBe(false);
  });

  it('gives every operation a unique id, its access, success and error responses, and bearer security unless public', () => {
    const operations = Object.values(doc.paths as Record<string, Record<string, Json>>).flatMap((ops) => Object.values(ops));
    expect(new Set(operations.map((op) => op.operationId)).size).toBe(operations.length);
    for (const op of operations) {
      expect(['public', 'read', 'write', 'admin']).toContain(op['x-usher-access']);
      expect(op.security).toEqual(op['x-usher-access'] === 'public' ? [] : [{ bearerAuth: [] }]);
      const statuses = Object.keys(op.responses);
      expect(statuses.some((status) => status.startsWith('2')), op.operationId).toBe(true);
      expect(statuses).toContain('500');
      if (op['x-usher-access'] !== 'public') expect(statuses).toContain('401');
      if (op['x-usher-access'] === 'write' || op['x-usher-access'] === 'admin') expect(statuses).toContain('403');
      for (const status of statuses.filter((code) => Number(code) >= 400)) {
        expect(op.responses[status].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/Error' });
      }
    }
    expect(doc.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  it('documents inputs from the validating schemas: parameters, bodies and their constraints', () => {
    const list = doc.paths['/api/v1/executions'].get;
    expect(list.parameters.map((parameter: Json) => parameter.name)).toEqual([
      'status', 'action_ref', 'pack_name', 'enforcement', 'parent', 'created_after', 'created_before', 'before_id', 'page', 'per_page',
    ]);
    expect(list.parameters.find((parameter: Json) => parameter.name === 'per_page')).toMatchObject({
      in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 100, default: 50 },
    });
    const get = doc.paths['/api/v1/executions/{id}'].get;
    expect(get.parameters).toEqual([expect.objectContaining({ name: 'id', in: 'path', required: true })]);
    const execute = doc.paths['/api/v1/executions/execute'].post;
    expect(execute.requestBody.required).toBe(true);
    expect(execute.requestBody.content['application/json'].schema).toMatchObject({
      type: 'object', required: ['action_ref', 'parameters'], additionalProperties: false,
    });
    expect(Object.keys(execute.responses).sort()).toEqual(['200', '201', '400', '401', '403', '404', '409', '413', '415', '429', '500', '503']);
    expect(doc.paths['/api/v1/executions/{id}/cancel'].post.requestBody.required).toBe(false);
  });

  it('describes every column an execution has in its Execution schema', () => {
    expect(Object.keys(doc.components.schemas.Execution.properties)).toEqual([...executionColumns]);
    expect(doc.components.schemas).toHaveProperty('Policy');
    expect(doc.components.schemas).toHaveProperty('Error');
  });

  it('answers every documented route (no documented operation is missing from the app)', async () => {
    await api.t.pool.query(`insert into usher.actions (ref) values ('demo.a'); insert into usher.policies (ref) values ('p1');
      insert into usher.schedules (ref, action_ref, cron) values ('demo.a', 'demo.a', '@daily')`);
    const id = (await api.t.pool.query(`insert into usher.executions (action_ref) values ('demo.a') returning id`)).rows[0].id;
    for (const route of allRoutes(() => ({}))) {
      if (route.method !== 'get') continue;
      const path = route.path.replace('{id}', id).replace('{ref}', route.path.startsWith('/policies') ? 'p1' : route.path.startsWith('/packs') ? 'demo' : 'demo.a');
      const res = await api.request('GET', path, { token: READ_TOKEN });
      expect([path, res.status]).toEqual([path, 200]);
    }
  });
});
