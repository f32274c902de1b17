/**
 * Batches a worker's completions: handlers that return while a batch is on its way join the next
 * one, so a busy worker commits once per batch rather than once per execution, and each lane admits
 * its next executions once per batch. An idle worker sends each completion at once, alone.
 */
import { isTransientDatabaseError } from '../errors.ts';
import type { Completion } from '../queue/worker-calls.ts';
import type { MarkResult } from '../queue/types.ts';

interface Pending {
  readonly completion: Completion;
  resolve(status: MarkResult): void;
  reject(error: unknown): void;
}

/** Sends one batch in one round trip; the answer gives each completion's status, in order. */
export type SendCompletions = (batch: readonly Completion[]) => Promise<MarkResult[]>;

export class CompletionBatcher {
  private pending: Pending[] = [];
  private sending = false;

  constructor(private readonly send: SendCompletions, private readonly maxBatch = 500) {}

  /** Completions waiting for the next batch (not yet sent). */
  get queued(): number {
    return this.pending.length;
  }

  /** Resolves with the status written (null: the lease was lost); rejects as the database call did. */
  complete(completion: Completion): Promise<MarkResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ completion, resolve, reject });
      if (this.sending) return;
      this.sending = true;
      // Handlers finishing in this turn of the event loop still make it into the first batch.
      setImmediate(() => void this.drain());
    });
  }

  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, this.maxBatch);
      await this.sendBatch(batch);
    }
    this.sending = false;
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    try {
      const statuses = await this.send(batch.map(({ completion }) => completion));
      batch.forEach((member, index) => member.resolve(statuses[index] ?? null));
    } catch (error) {
      if (batch.length > 1 && !isTransientDatabaseError(error)) {
        // One member's result may be what the database refused (say, jsonb it cannot store): each
        // goes again alone, so only that one gets the error.
        for (const member of batch) await this.sendBatch([member]);
        return;
      }
      for (const member of batch) member.reject(error);
    }
  }
}
