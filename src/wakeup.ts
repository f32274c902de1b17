/**
 * A level-triggered wake-up for loops that sleep until there may be work: `notify()` any number
 * of times while the loop is busy and its next `wait()` returns at once, exactly once.
 */
export class Wakeup {
  private pending = true;
  private resolveWaiter: (() => void) | undefined;

  notify(): void {
    this.pending = true;
    this.resolveWaiter?.();
  }

  /** Resolves on the next notify, after `timeoutMs`, or at once if a notify is pending. */
  wait(timeoutMs: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(finish, timeoutMs);
      this.resolveWaiter = finish;
      const self = this;
      function finish(): void {
        clearTimeout(timer);
        self.resolveWaiter = undefined;
        self.pending = false;
        resolve();
      }
    });
  }
}
