// When each recent intent entry reached this site, got its turn in the write queue and committed
// (wall-clock ms, comparable across processes on one machine): a bounded ring served as JSON on
// the metrics port, so a slow change can be traced to the stage that was slow (propagation bench).

export interface EntryTiming {
  /** The coordinator log index of the entry. */
  index: number;
  /** Topology revision it committed (0 = it changed nothing here). */
  revision: number;
  /** Unix ms (fractional) the entry arrived from the coordinator. */
  receivedAt: number;
  /** Its apply got the write queue. */
  startedAt: number;
  /** Translated; its transaction begins. */
  translatedAt: number;
  /** The transaction's statements are done; COMMIT (and the database's fsync) follows. */
  writtenAt: number;
  /** Its transaction committed (this replica's watchers are handed the change next). */
  committedAt: number;
}

/** The newest `size` entries' timings, oldest first. */
export class EntryTimeline {
  private readonly ring: EntryTiming[] = [];
  private next = 0;

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 0)
      throw new RangeError(`entry timeline size must be a non-negative integer, got ${size}`);
  }

  record(t: EntryTiming): void {
    if (this.size === 0) return;
    if (this.ring.length < this.size) this.ring.push(t);
    else this.ring[this.next] = t;
    this.next = (this.next + 1) % this.size;
  }

  /** Entries with an index above `after`, oldest first. */
  since(after = 0): EntryTiming[] {
    const ordered =
      this.ring.length < this.size
        ? this.ring
        : [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
    return ordered.filter((t) => t.index > after);
  }
}
