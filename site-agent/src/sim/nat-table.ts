// NAT bindings: for each translated connection the forward translation (looked up by the original
// tuple, so a re-simulated packet gets the same address and port) and the reverse translation
// (looked up by the reply's tuple). Bounded, with idle expiry; expired bindings free their port.
import { tag } from "./topology-view.js";

export interface NatBinding {
  kind: "snat" | "dnat";
  key: string;
  reverseKey: string;
  deviceId: string;
  origIp: number;
  origPort: number;
  natIp: number;
  natPort: number;
  expiresAt: number;
}

export function natKey(
  kind: string,
  deviceId: string,
  proto: number,
  a: number,
  ap: number,
  b: number,
  bp: number,
) {
  return `${kind}|${deviceId}|${proto}|${a}|${ap}|${b}|${bp}`;
}

export class NatTable {
  private readonly forward = new Map<string, NatBinding>();
  private readonly reverse = new Map<string, NatBinding>();
  refused = 0;

  /**
   * `replaced` hears of a binding `put` replaced under the same key with another (a connection
   * translated again after its binding lapsed, before `expire` ran): its port must be freed.
   */
  constructor(
    readonly maxBindings: number,
    readonly idleMs: number,
    private readonly replaced: (old: NatBinding, now: NatBinding) => void = () => {},
  ) {
    if (!(maxBindings > 0))
      throw new RangeError(`NatTable: maxBindings must be positive, got ${maxBindings}`);
  }

  get size(): number {
    return this.forward.size;
  }

  /** Reverse entries (each belongs to a binding in the table, so never more than `size`). */
  get reverseSize(): number {
    return this.reverse.size;
  }

  lookupForward(key: string, now: number): NatBinding | undefined {
    const b = this.forward.get(key);
    return b && b.expiresAt > now ? b : undefined;
  }

  lookupReverse(key: string, now: number): NatBinding | undefined {
    const b = this.reverse.get(key);
    return b && b.expiresAt > now ? b : undefined;
  }

  full(): boolean {
    return this.forward.size >= this.maxBindings;
  }

  /** Adds a binding (from this host's simulation or a peer's flow state); false when full. */
  put(b: NatBinding): boolean {
    const old = this.forward.get(b.key);
    if (!old && this.forward.size >= this.maxBindings) {
      this.refused++;
      return false;
    }
    if (old && old !== b) {
      if (this.reverse.get(old.reverseKey) === old) this.reverse.delete(old.reverseKey);
      this.replaced(old, b);
    }
    this.forward.set(b.key, b);
    this.reverse.set(b.reverseKey, b);
    return true;
  }

  touch(key: string, now: number): void {
    const b = this.forward.get(key);
    if (b) b.expiresAt = now + this.idleMs;
  }

  /** Removes the bindings `doomed` picks at once; returns their stale-flow tags. */
  removeWhere(doomed: (b: NatBinding) => boolean): string[] {
    const out: string[] = [];
    for (const [k, b] of this.forward) {
      if (!doomed(b)) continue;
      this.forward.delete(k);
      if (this.reverse.get(b.reverseKey) === b) this.reverse.delete(b.reverseKey);
      out.push(tag.nat(b.key));
    }
    return out;
  }

  /** Removes expired bindings; calls `freed` for each, returns stale-flow tags. */
  expire(now: number, freed: (b: NatBinding) => void): string[] {
    const out: string[] = [];
    for (const [k, b] of this.forward) {
      if (b.expiresAt > now) continue;
      this.forward.delete(k);
      if (this.reverse.get(b.reverseKey) === b) this.reverse.delete(b.reverseKey);
      freed(b);
      out.push(tag.nat(b.key));
    }
    return out;
  }
}
