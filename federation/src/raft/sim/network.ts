// The simulated network: every message gets a random delay (so messages reorder), and may be
// dropped or duplicated; partitions cut the links between groups of nodes. Delivery times are
// handed back to the simulation's event queue; nothing here touches a real socket.

import type { Message, NodeId } from "../types.js";
import type { Prng } from "./prng.js";

export interface NetworkFaults {
  /** Probability a message is lost. */
  dropRate: number;
  /** Probability a message is delivered twice. */
  duplicateRate: number;
  /** Delay range in ms for normal delivery. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Probability of a much longer delay (a straggler that arrives after newer messages). */
  slowRate: number;
  slowDelayMs: number;
}

export interface NetworkStats {
  sent: number;
  dropped: number;
  duplicated: number;
  partitioned: number;
}

export class SimNetwork {
  readonly stats: NetworkStats = { sent: 0, dropped: 0, duplicated: 0, partitioned: 0 };
  /** Node → partition group; nodes in different groups cannot talk. Empty = fully connected. */
  private groups = new Map<NodeId, number>();

  constructor(
    private readonly prng: Prng,
    readonly faults: NetworkFaults,
  ) {}

  partition(groups: NodeId[][]): void {
    this.groups = new Map();
    groups.forEach((g, k) => {
      for (const id of g) this.groups.set(id, k);
    });
  }

  heal(): void {
    this.groups = new Map();
  }

  isPartitioned(): boolean {
    return this.groups.size > 0;
  }

  connected(a: NodeId, b: NodeId): boolean {
    if (this.groups.size === 0) return true;
    return (this.groups.get(a) ?? -1) === (this.groups.get(b) ?? -1);
  }

  describePartition(): string {
    if (this.groups.size === 0) return "healed";
    const by = new Map<number, NodeId[]>();
    for (const [id, g] of this.groups) by.set(g, [...(by.get(g) ?? []), id]);
    return [...by.values()].map((g) => g.sort().join(",")).join(" | ");
  }

  /** Delivery delays (ms) for one message: none when lost, two when duplicated. */
  route(m: Message): number[] {
    this.stats.sent++;
    if (!this.connected(m.from, m.to)) {
      this.stats.partitioned++;
      return [];
    }
    if (this.prng.chance(this.faults.dropRate)) {
      this.stats.dropped++;
      return [];
    }
    const delays = [this.delay()];
    if (this.prng.chance(this.faults.duplicateRate)) {
      this.stats.duplicated++;
      delays.push(this.delay());
    }
    return delays;
  }

  /** Whether a message still in flight may be delivered now (partitions cut links mid-flight too). */
  deliverable(m: Message): boolean {
    if (this.connected(m.from, m.to)) return true;
    this.stats.partitioned++;
    return false;
  }

  private delay(): number {
    if (this.prng.chance(this.faults.slowRate))
      return this.prng.range(this.faults.maxDelayMs, this.faults.slowDelayMs);
    return this.prng.range(this.faults.minDelayMs, this.faults.maxDelayMs);
  }
}
