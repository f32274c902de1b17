// c.query: holds one connection of the handlers' own small pool (CHAOS_HANDLER_POOL, default 2) for
// params.ms milliseconds, inside the database: handlers compete for connections with each other.
import pg from 'pg';

let pool;

export default async function query(params, ctx) {
  pool ??= new pg.Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.CHAOS_HANDLER_POOL ?? 2) });
  const { rows } = await pool.query('select pg_sleep($1::float8 / 1000), $2::int as n', [Number(params.ms ?? 0), params.n ?? 0]);
  return { n: rows[0].n, attempt: ctx.execution.attempt };
}
