// One writer at a time inside a controller process: intent entries and site-API writes both
// change the in-memory intent index and the database, and must do so in the same order.
export class WriteQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private depth = 0;

  constructor(readonly maxDepth = 10_000) {}

  run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.depth >= this.maxDepth) {
      return Promise.reject(new Error(`controller write queue is full (${this.maxDepth} waiting)`));
    }
    this.depth++;
    const next = this.tail.then(fn, fn);
    this.tail = next.then(
      () => this.depth--,
      () => this.depth--,
    );
    return next;
  }
}
