// Learned MAC → port per bridge and VLAN, with idle expiry and a bound. Static knowledge (MacEntry
// objects, VM and router port MACs) lives in the TopologyView and wins over anything learned here.
import { tag } from "./topology-view.js";

export interface LearnedEntry {
  portId: string;
  expiresAt: number;
}

export const LEARN_UNCHANGED = 0;
export const LEARN_NEW = 1;
export const LEARN_MOVED = 2;
export const LEARN_FULL = 3;

export class MacTable {
  private readonly byBridge = new Map<string, Map<number, Map<number, LearnedEntry>>>();
  size = 0;
  /** Learn attempts refused because the table was full. */
  refused = 0;

  constructor(
    readonly maxEntries: number,
    readonly ttlMs: number,
  ) {
    if (!(maxEntries > 0)) throw new RangeError(`MacTable: maxEntries must be positive, got ${maxEntries}`);
  }

  lookup(bridgeId: string, vlan: number, mac: number, now: number): LearnedEntry | undefined {
    const e = this.byBridge.get(bridgeId)?.get(vlan)?.get(mac);
    return e && e.expiresAt > now ? e : undefined;
  }

  learn(bridgeId: string, vlan: number, mac: number, portId: string, now: number): number {
    let vl = this.byBridge.get(bridgeId);
    if (!vl) {
      vl = new Map();
      this.byBridge.set(bridgeId, vl);
    }
    let t = vl.get(vlan);
    if (!t) {
      t = new Map();
      vl.set(vlan, t);
    }
    const e = t.get(mac);
    if (e) {
      const expired = e.expiresAt <= now;
      e.expiresAt = now + this.ttlMs;
      if (e.portId === portId) return expired ? LEARN_NEW : LEARN_UNCHANGED;
      e.portId = portId;
      return LEARN_MOVED;
    }
    if (this.size >= this.maxEntries) {
      this.refused++;
      return LEARN_FULL;
    }
    t.set(mac, { portId, expiresAt: now + this.ttlMs });
    this.size++;
    return LEARN_NEW;
  }

  /** Removes expired entries; returns the tags of flows that depended on them. */
  expire(now: number): string[] {
    const out: string[] = [];
    for (const [bridgeId, vl] of this.byBridge) {
      for (const t of vl.values()) {
        for (const [mac, e] of t) {
          if (e.expiresAt > now) continue;
          t.delete(mac);
          this.size--;
          out.push(tag.mac(bridgeId, mac));
        }
      }
    }
    return out;
  }
}
