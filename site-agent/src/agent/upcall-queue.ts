// Flow misses waiting for simulation. Each source (a port, or a tunnel) has its own bounded FIFO
// and the consumer takes one item per source in turn, so a VM flooding new flows fills only its own
// queue and every other port still gets its share of the simulator.

export interface UpcallQueueLimits {
  /** Packets queued per source; more are dropped (counted) until it drains. */
  perSource: number;
  /** Packets queued in total. */
  total: number;
}

/** Sources whose emptied queue is kept for reuse; beyond it an emptied queue is dropped. */
const IDLE_SOURCES_KEPT = 1024;

export const DEFAULT_UPCALL_LIMITS: UpcallQueueLimits = { perSource: 256, total: 4096 };

export class UpcallQueue<T> {
  private readonly queues = new Map<string, T[]>();
  /** Sources with items, in round-robin order. */
  private readonly ready: string[] = [];
  private depth = 0;
  readonly dropped = new Map<string, number>();

  constructor(readonly limits: UpcallQueueLimits = DEFAULT_UPCALL_LIMITS) {
    if (limits.perSource < 1 || limits.total < 1) throw new Error("upcall queue: limits must be ≥ 1");
  }

  get size(): number {
    return this.depth;
  }

  /** Queues an item; false (and counted) when its source's queue or the whole queue is full. */
  push(source: string, item: T): boolean {
    let q = this.queues.get(source);
    if (this.depth >= this.limits.total || (q !== undefined && q.length >= this.limits.perSource)) {
      this.dropped.set(source, (this.dropped.get(source) ?? 0) + 1);
      return false;
    }
    if (!q) {
      q = [];
      this.queues.set(source, q);
    }
    if (q.length === 0) this.ready.push(source);
    q.push(item);
    this.depth++;
    return true;
  }

  /** Takes the next item, one source at a time in turn. */
  shift(): { source: string; item: T } | undefined {
    const source = this.ready[0];
    const item = this.take();
    return item === undefined || source === undefined ? undefined : { source, item };
  }

  /** As shift(), without saying whose it was (allocates nothing). */
  take(): T | undefined {
    const source = this.ready.shift();
    if (source === undefined) return undefined;
    const q = this.queues.get(source)!;
    const item = q.shift() as T;
    this.depth--;
    if (q.length > 0) this.ready.push(source);
    // An emptied queue is kept for its source's next packet (one array per source rather than
    // one per burst), up to a bound on idle sources.
    else if (this.queues.size > IDLE_SOURCES_KEPT) this.queues.delete(source);
    return item;
  }

  /** Forgets a source (its port went away). */
  drop(source: string): void {
    const q = this.queues.get(source);
    if (!q) return;
    this.depth -= q.length;
    this.queues.delete(source);
    const i = this.ready.indexOf(source);
    if (i >= 0) this.ready.splice(i, 1);
  }
}
