// Pending linearizable reads on the leader (ReadIndex, "safe" mode): each request remembers the
// commit index when it arrived and is released once a quorum has answered a heartbeat carrying its
// context, which proves no newer leader existed at that moment. Bounded by maxPending.

import { ProposalDroppedError } from "./errors.js";
import type { Message, NodeId } from "./types.js";

export interface ReadIndexStatus {
  /** The original ReadIndex request (local or forwarded from a follower). */
  req: Message;
  index: number;
  acks: Set<NodeId>;
}

export function contextKey(ctx: Uint8Array): string {
  return Buffer.from(ctx.buffer, ctx.byteOffset, ctx.byteLength).toString("hex");
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexStatus>();
  private queue: string[] = [];

  constructor(readonly maxPending: number) {}

  get size(): number {
    return this.queue.length;
  }

  /** Adds a request; a duplicate context (a retry) is ignored. */
  add(index: number, req: Message): void {
    const key = contextKey(req.context);
    if (this.pending.has(key)) return;
    if (this.queue.length >= this.maxPending) throw new ProposalDroppedError("read-queue-full");
    this.pending.set(key, { req, index, acks: new Set() });
    this.queue.push(key);
  }

  /** Records that `from` answered a heartbeat with this context; returns who has acked it. */
  recvAck(from: NodeId, ctx: Uint8Array): Set<NodeId> | undefined {
    const rs = this.pending.get(contextKey(ctx));
    if (!rs) return undefined;
    rs.acks.add(from);
    return rs.acks;
  }

  /**
   * Releases the request with this context and every request queued before it (a quorum ack for a
   * later heartbeat also confirms leadership for the earlier ones).
   */
  advance(ctx: Uint8Array): ReadIndexStatus[] {
    const key = contextKey(ctx);
    const at = this.queue.indexOf(key);
    if (at < 0) return [];
    const released = this.queue.slice(0, at + 1);
    this.queue = this.queue.slice(at + 1);
    const out: ReadIndexStatus[] = [];
    for (const k of released) {
      const rs = this.pending.get(k);
      if (rs) out.push(rs);
      this.pending.delete(k);
    }
    return out;
  }

  /** Context of the newest pending request, sent with heartbeats. */
  lastPendingContext(): Uint8Array | undefined {
    const k = this.queue[this.queue.length - 1];
    return k === undefined ? undefined : this.pending.get(k)?.req.context;
  }

  reset(): void {
    this.pending.clear();
    this.queue = [];
  }
}
