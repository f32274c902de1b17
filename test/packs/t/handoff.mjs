// t.handoff: t.work, except that a worker process started with T_HANDOFF_MS takes that many
// milliseconds instead of params.ms. Lets a test stop a slow worker mid-run and have a quick one
// finish the execution it handed back, with the same params.
import work from './work.mjs';

export default function handoff(params, ctx) {
  const override = process.env.T_HANDOFF_MS;
  return work(override === undefined ? params : { ...params, ms: Number(override) }, ctx);
}
