// c.herd: c.work under another name, for executions with no policy next to c.work's lanes.
export { default } from './work.mjs';
