// raft-ts: an in-process Transport for tests of the RaftNode driver. Messages are delivered on a
// later turn of the event loop (never re-entrantly), and links can be cut to partition nodes.
// Like a real network it may drop: a full per-destination queue drops and counts.
import type { Message, NodeId, Transport } from "./types.js";

export interface MemoryNetworkOptions {
  /** Messages queued towards one node before further ones are dropped. Default 10 000. */
  maxQueuePerNode?: number;
}

export class MemoryNetwork {
  private readonly handlers = new Map<NodeId, (m: Message) => void>();
  private readonly queues = new Map<NodeId, Message[]>();
  private readonly cut = new Set<string>();
  private readonly maxQueue: number;
  private scheduled = false;
  delivered = 0;
  dropped = 0;

  constructor(opts: MemoryNetworkOptions = {}) {
    this.maxQueue = opts.maxQueuePerNode ?? 10_000;
  }

  /** The transport node `id` uses; each id may be attached once at a time. */
  transport(id: NodeId): MemoryTransport {
    return new MemoryTransport(this, id);
  }

  /** Cuts both directions between `a` and `b`. */
  partition(a: NodeId, b: NodeId): void {
    this.cut.add(`${a}>${b}`);
    this.cut.add(`${b}>${a}`);
  }

  /** Cuts `id` off from every other node. */
  isolate(id: NodeId, others: NodeId[]): void {
    for (const o of others) if (o !== id) this.partition(id, o);
  }

  heal(): void {
    this.cut.clear();
  }

  /** @internal */
  attach(id: NodeId, handler: (m: Message) => void): void {
    this.handlers.set(id, handler);
  }

  /** @internal */
  detach(id: NodeId): void {
    this.handlers.delete(id);
    this.queues.delete(id);
  }

  /** @internal */
  enqueue(m: Message): void {
    if (this.cut.has(`${m.from}>${m.to}`) || !this.handlers.has(m.to)) {
      this.dropped++;
      return;
    }
    let q = this.queues.get(m.to);
    if (!q) {
      q = [];
      this.queues.set(m.to, q);
    }
    if (q.length >= this.maxQueue) {
      this.dropped++;
      return;
    }
    // Receivers get their own copy of the envelope, as they would off a wire.
    q.push({ ...m, entries: m.entries.map((e) => ({ ...e })) });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.deliver());
    }
  }

  private deliver(): void {
    this.scheduled = false;
    const queues = [...this.queues.entries()];
    this.queues.clear();
    for (const [to, msgs] of queues) {
      for (const m of msgs) {
        const h = this.handlers.get(to);
        if (!h || this.cut.has(`${m.from}>${m.to}`)) {
          this.dropped++;
          continue;
        }
        this.delivered++;
        h(m);
      }
    }
  }
}

export class MemoryTransport implements Transport {
  private readonly peers = new Map<NodeId, string>();
  private closed = false;
  /** Messages addressed to a node that is not a known peer. */
  unknownPeerDrops = 0;

  constructor(
    private readonly network: MemoryNetwork,
    readonly id: NodeId,
  ) {}

  send(messages: Message[]): void {
    if (this.closed) return;
    for (const m of messages) {
      if (!this.peers.has(m.to)) {
        this.unknownPeerDrops++;
        continue;
      }
      this.network.enqueue(m);
    }
  }

  onMessage(handler: (m: Message) => void): void {
    this.network.attach(this.id, handler);
  }

  addPeer(id: NodeId, address: string): void {
    this.peers.set(id, address);
  }

  removePeer(id: NodeId): void {
    this.peers.delete(id);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.network.detach(this.id);
  }
}
