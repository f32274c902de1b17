/** Drives executions into given states through Usher's own SQL functions, without worker processes. */
import type pg from 'pg';

export async function registerTestWorker(pool: pg.Pool, name: string, actions: string[]): Promise<string> {
  const { rows } = await pool.query<{ id: string }>(
    `select usher.register_worker($1, 'test-host', 4242, $2::jsonb, 4) as id`,
    [name, JSON.stringify(actions.map((ref) => ({ ref })))],
  );
  return rows[0]!.id;
}

/** Claims the oldest admitted execution of `action` for the worker; returns its id and lease token. */
export async function claimOne(pool: pg.Pool, workerId: string, action: string): Promise<{ id: string; lease_token: string }> {
  const { rows } = await pool.query<{ id: string; lease_token: string }>(
    'select id, lease_token from usher.claim_scheduled($1, $2::text[], 1, 300)', [workerId, [action]]);
  if (!rows[0]) throw new Error(`nothing of ${action} to claim`);
  return rows[0];
}

export async function failClaimed(pool: pg.Pool, claim: { id: string; lease_token: string }, error = 'boom'): Promise<void> {
  await pool.query('select usher.fail_execution($1, $2, $3, null, false)', [claim.id, claim.lease_token, error]);
}

export async function completeClaimed(pool: pg.Pool, claim: { id: string; lease_token: string }, result: unknown): Promise<void> {
  await pool.query('select usher.complete_execution($1, $2, $3::jsonb)', [claim.id, claim.lease_token, JSON.stringify(result)]);
}

/**
 * An execution row as the API must show it, read independently of the API's own code: every
 * column but the lease token and scope_counted, timestamps as ISO strings.
 */
export async function executionJson(pool: pg.Pool, id: string): Promise<Record<string, unknown>> {
  const { rows } = await pool.query<Record<string, unknown>>('select * from usher.executions where id = $1', [id]);
  const { lease_token: _token, scope_counted: _counted, ...visible } = rows[0]!;
  return JSON.parse(JSON.stringify(visible)) as Record<string, unknown>;
}
