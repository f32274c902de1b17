// t.other: a second action with the same behaviour as t.work, for tests of independent lanes.
export { default } from './work.mjs';
