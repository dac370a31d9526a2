// A bounded, in-memory record of the most recent committed changes, so a watcher that fell a
// little behind (a site reconnecting, an admin's `Watch`) is replayed exactly the entries it
// missed. Older positions are answered with a snapshot instead (`covers` says which applies).
import type { intentpb } from "@isthmus/schema";

export const DEFAULT_JOURNAL_LIMIT = 10_000;

export class ChangeJournal {
  private readonly changes: intentpb.IntentChange[] = [];
  private head = 0; // index into `changes` of the oldest retained change (ring-less deque)
  /** Every change with index > floor is retained. */
  private floorIndex: number;

  constructor(
    readonly limit = DEFAULT_JOURNAL_LIMIT,
    floor = 0,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`journal limit must be ≥ 1, got ${limit}`);
    this.floorIndex = floor;
  }

  get floor(): number {
    return this.floorIndex;
  }

  get size(): number {
    return this.changes.length - this.head;
  }

  append(change: intentpb.IntentChange): void {
    const last = this.changes[this.changes.length - 1];
    if (last && change.index <= last.index) {
      throw new Error(`journal: change ${change.index} is not after ${last.index} (invariant violated)`);
    }
    this.changes.push(change);
    if (this.size > this.limit) {
      this.floorIndex = (this.changes[this.head] as intentpb.IntentChange).index;
      this.head++;
      // Compact the backing array now and then so it stays O(limit).
      if (this.head >= this.limit) {
        this.changes.splice(0, this.head);
        this.head = 0;
      }
    }
  }

  /** True when every change after `fromIndex` is still retained. */
  covers(fromIndex: number): boolean {
    return fromIndex >= this.floorIndex;
  }

  /** Changes with index > fromIndex, oldest first. Call only when covers(fromIndex). */
  since(fromIndex: number): intentpb.IntentChange[] {
    const out: intentpb.IntentChange[] = [];
    for (let i = this.changes.length - 1; i >= this.head; i--) {
      const c = this.changes[i] as intentpb.IntentChange;
      if (c.index <= fromIndex) break;
      out.push(c);
    }
    return out.reverse();
  }

  /** Forgets everything (after a snapshot restore): only positions ≥ floor can be replayed. */
  reset(floor: number): void {
    this.changes.length = 0;
    this.head = 0;
    this.floorIndex = floor;
  }
}
