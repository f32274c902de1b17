// t.fatal: throws an error that must not be retried: one with `retryable = false` (default), or a
// NonRetryableError (params.kind = 'class'). params.kind = 'plain' throws an ordinary, retryable Error.
import { NonRetryableError } from '../../../src/worker/runner.ts';

export default async function fatal(params) {
  if (params.kind === 'class') throw new NonRetryableError(`permanent refusal (${params.n ?? ''})`);
  if (params.kind === 'plain') throw new Error(`transient trouble (${params.n ?? ''})`);
  const error = new Error(`bad input (${params.n ?? ''})`);
  error.retryable = false;
  throw error;
}
