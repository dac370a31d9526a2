// The leader's view of one peer: how far its log matches (match), what to send next (next), and the
// flow-control state. In "probe" the leader sends one append at a time until it finds where the logs
// agree; in "replicate" it pipelines appends, bounded by Inflights (messages and bytes); in
// "snapshot" it streams snapshot chunks and sends nothing else.

import { RaftInvariantError } from "./errors.js";
import type { Snapshot } from "./types.js";

export type ProgressState = "probe" | "replicate" | "snapshot";

/** Appends sent but not yet acknowledged: a FIFO of (last index, bytes) bounded by count and bytes. */
export class Inflights {
  private readonly idx: number[] = [];
  private readonly sizes: number[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly maxCount: number,
    readonly maxBytes: number,
  ) {}

  get count(): number {
    return this.idx.length - this.head;
  }

  get totalBytes(): number {
    return this.bytes;
  }

  add(index: number, bytes: number): void {
    if (this.full()) throw new RaftInvariantError("inflights: add() while full");
    const last = this.idx[this.idx.length - 1];
    if (this.count > 0 && last !== undefined && index <= last) {
      throw new RaftInvariantError(`inflights: index ${index} not above last in flight ${last}`);
    }
    this.idx.push(index);
    this.sizes.push(bytes);
    this.bytes += bytes;
  }

  /** Frees every append whose last index is ≤ to (they were acknowledged). */
  freeLE(to: number): void {
    while (this.head < this.idx.length && this.idx[this.head]! <= to) {
      this.bytes -= this.sizes[this.head]!;
      this.head++;
    }
    // Compact occasionally so the arrays do not grow without bound.
    if (this.head > 64 && this.head * 2 > this.idx.length) {
      this.idx.splice(0, this.head);
      this.sizes.splice(0, this.head);
      this.head = 0;
    }
  }

  /** Frees the oldest append in flight (to probe a stalled pipeline). */
  freeFirstOne(): void {
    if (this.count === 0) return;
    this.freeLE(this.idx[this.head]!);
  }

  full(): boolean {
    return this.count >= this.maxCount || (this.maxBytes > 0 && this.bytes >= this.maxBytes);
  }

  reset(): void {
    this.idx.length = 0;
    this.sizes.length = 0;
    this.head = 0;
    this.bytes = 0;
  }
}

/** Snapshot being streamed to a peer in chunks. */
export interface SnapshotSend {
  snapshot: Snapshot;
  /** Bytes of snapshot data the peer has acknowledged. */
  acked: number;
}

export class Progress {
  match = 0;
  next: number;
  state: ProgressState = "probe";
  /** In probe state: an append is outstanding, send nothing more until a response or heartbeat. */
  probeSent = false;
  /** Index of the snapshot being sent, in snapshot state. */
  pendingSnapshot = 0;
  snapshotSend: SnapshotSend | undefined;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  readonly inflights: Inflights;

  constructor(
    next: number,
    maxInflightMsgs: number,
    maxInflightBytes: number,
    public isLearner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes);
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.snapshotSend = undefined;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot the follower has at least the snapshot's entries.
    if (this.state === "snapshot") {
      const pending = this.pendingSnapshot;
      this.resetState("probe");
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState("probe");
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState("replicate");
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshot: Snapshot): void {
    this.resetState("snapshot");
    this.pendingSnapshot = snapshot.metadata.index;
    this.snapshotSend = { snapshot, acked: 0 };
  }

  /** Records that an append ending at `lastIndex` (with `bytes` of entries) was sent. */
  sentEntries(lastIndex: number, count: number, bytes: number): void {
    if (this.state === "replicate") {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, bytes);
      }
    } else if (this.state === "probe") {
      this.probeSent = true;
    } else {
      throw new RaftInvariantError(`sending entries in ${this.state} state`);
    }
  }

  /** An acknowledgement up to n; false when it is stale (we knew already). */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * The peer rejected an append at `rejected`; its log may match up to `matchHint`. Returns false
   * when the rejection is stale (for an append we have already moved past).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      case "snapshot":
        return true;
    }
  }

  toString(): string {
    let s = `${this.state} match=${this.match} next=${this.next}`;
    if (this.isLearner) s += " learner";
    if (this.probeSent) s += " paused";
    if (this.state === "snapshot") s += ` pendingSnap=${this.pendingSnapshot}`;
    if (this.inflights.count > 0) s += ` inflight=${this.inflights.count}`;
    if (this.inflights.full()) s += "[full]";
    return s;
  }
}
