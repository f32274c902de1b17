/**
 * An upper bound for a leaner threshold-1 step, measured beside the real one. One connection
 * alternates blocks of 100 steps of a lane between usher.complete_and_claim and a bare function
 * (created in the benchmark database only) that writes what a step must: the completion, the lane
 * row, the next execution running, and their event-log rows — with no policy, pause, rate-limit,
 * quota or batch handling. --with-admission adds the hop through `scheduled` (one more update and
 * event-log row) and the policy and pause lookups, as Usher's states require.
 * Usage: npx tsx bench/lean-step-bound.ts [--with-admission]
 */
import { parseArgs } from 'node:util';
import pg from 'pg';
import { UsherAdapter } from './adapters/usher.ts';
import { databaseUrl, dropDatabase } from './db.ts';

const { values: args } = parseArgs({ options: { 'with-admission': { type: 'boolean', default: false } } });
const steps = 6000;
const block = 100;

interface Claim { id: string; lease_token: string }

const adapter = new UsherAdapter({ system: 'usher', variant: 'defaults' });
await adapter.setup({ kind: 'serial' });
await adapter.enqueueBulk(Array.from({ length: steps + 1 }, (_, seq) => ({ seq })));
const client = new pg.Client({ connectionString: databaseUrl('bench_usher') });
await client.connect();
await client.query(`create function public.bare_step(p_id bigint, p_token uuid, p_worker bigint, p_with_admission boolean)
returns table (id bigint, lease_token uuid)
language plpgsql
set usher.records_own_transitions = on
as $$
#variable_conflict use_column
declare
  v_lane text;
  v_next bigint;
  v_now timestamptz := clock_timestamp();
begin
  update usher.executions e
  set status = 'completed', completed_at = v_now, updated_at = v_now, lease_token = null, lease_expires_at = null, result = 'null'
  where e.id = p_id and e.lease_token = p_token and e.status = 'running'
  returning e.lane_key into v_lane;
  insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt)
  values (p_id, 'bench.noop', 'completed', 'running', 1);
  select e.id into v_next from usher.executions e
  where e.lane_key = v_lane and e.status = 'requested' order by e.queue_position, e.id limit 1 for update;
  update usher.lanes l set updated_at = v_now, total_admitted = l.total_admitted + 1 where l.lane_key = v_lane;
  if p_with_admission then
    perform usher.lane_policy(v_lane);
    perform usher.anything_paused();
    update usher.executions e set status = 'scheduled', scheduled_at = v_now, updated_at = v_now where e.id = v_next;
    insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt)
    values (v_next, 'bench.noop', 'scheduled', 'requested', 0);
  end if;
  insert into usher.execution_transitions (execution_id, action_ref, status, previous_status, attempt)
  values (v_next, 'bench.noop', 'running', case when p_with_admission then 'scheduled' else 'requested' end, 1);
  return query
  update usher.executions e
  set status = 'running', scheduled_at = coalesce(e.scheduled_at, v_now), started_at = v_now, worker_id = p_worker,
    attempt = e.attempt + 1, lease_token = gen_random_uuid(), lease_expires_at = v_now + interval '60 s', updated_at = v_now
  where e.id = v_next
  returning e.id, e.lease_token;
end
$$`);
await client.query('call usher.admit_queued()');
await client.query('vacuum analyze usher.executions');
const workerId = (await client.query<{ id: string }>(
  `select usher.register_worker('lean-step-bound', 'bench', 1, '[{"ref": "bench.noop"}]', 1) as id`)).rows[0]!.id;
const claimed = (await client.query<Claim>(
  `select id, lease_token from usher.claim_scheduled($1, array['bench.noop'], 1, 60)`, [workerId])).rows;

let bare = false;

async function step(): Promise<void> {
  const [done] = claimed.splice(0, 1);
  const { rows } = bare
    ? await client.query<Claim>({
      name: 'bare_step',
      text: 'select id, lease_token from public.bare_step($1, $2, $3, $4) where id is not null',
      values: [done!.id, done!.lease_token, workerId, args['with-admission']],
    })
    : await client.query<Claim & { kind: string }>({
      name: 'complete_and_claim',
      text: `select kind, id, lease_token from usher.complete_and_claim($1::bigint[], $2::uuid[], $3::jsonb[], $4, array['bench.noop'], 1, 60)`,
      values: [[done!.id], [done!.lease_token], ['null'], workerId],
    });
  claimed.push(...rows.filter((row) => !('kind' in row) || row.kind === 'claimed'));
}

for (let i = 0; i < 20; i += 1) {
  bare = i % 2 === 0;
  await step();
}
const totals = { full: { ms: 0, steps: 0 }, bare: { ms: 0, steps: 0 } };
for (let round = 0; claimed.length > 0 && totals.full.steps + totals.bare.steps < steps - 150; round += 1) {
  bare = round % 2 === 1;
  const total = totals[bare ? 'bare' : 'full'];
  const started = performance.now();
  for (let i = 0; i < block && claimed.length > 0; i += 1) {
    await step();
    total.steps += 1;
  }
  total.ms += performance.now() - started;
}
const { rows: [counts] } = await client.query<{ completed: string; running: string }>(
  `select count(*) filter (where status = 'completed') as completed, count(*) filter (where status = 'running') as running from usher.executions`);
const perStep = (kind: keyof typeof totals) => totals[kind].ms / totals[kind].steps;
console.log(`complete_and_claim ${perStep('full').toFixed(3)} ms a step (${totals.full.steps}), ` +
  `bare${args['with-admission'] ? ' with admission' : ''} ${perStep('bare').toFixed(3)} ms (${totals.bare.steps}); ` +
  `bare ÷ complete_and_claim ${(perStep('bare') / perStep('full')).toFixed(3)}; ${counts!.completed} completed, ${counts!.running} running`);
await client.end();
await adapter.close();
await dropDatabase('bench_usher');
