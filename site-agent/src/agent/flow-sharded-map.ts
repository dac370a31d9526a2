// Per-flow indexes (the flow table's mask buckets and tags, the kernel datapath's entries) as a Map
// split into shards. A JS Map grows by rehashing every entry into a table twice its size, inside
// the set() that filled it: at 4096 and 8192 flows that was 11 and 23 ms inside one flow's setup
// (scripts/flow-setup-micro.mjs, slowest setups), and every per-flow Map grows on the same setup.
// With 64 shards one growth step moves a 64th of the entries, so no single setup pays for all.

const SHARDS = 64;

/** FNV-1a over a string's code units, folded to a shard: which shard a string key lives in. */
export function stringShard(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h ^ (h >>> 16)) & (SHARDS - 1);
}

/** The shard of a sequential number (an id): its low bits. */
export function numberShard(n: number): number {
  return n & (SHARDS - 1);
}

export class ShardedMap<K, V> {
  /** Made on first use: a table that stays small (a mask bucket for ARP) costs a few Maps. */
  private readonly shards: (Map<K, V> | undefined)[] = new Array(SHARDS).fill(undefined);
  private count = 0;

  /** `shardOf` must return an integer in 0..63 and the same one for equal keys. */
  constructor(private readonly shardOf: (key: K) => number) {}

  get size(): number {
    return this.count;
  }

  get(key: K): V | undefined {
    return this.shards[this.shardOf(key)]?.get(key);
  }

  has(key: K): boolean {
    return this.shards[this.shardOf(key)]?.has(key) === true;
  }

  set(key: K, value: V): this {
    const i = this.shardOf(key);
    let m = this.shards[i];
    if (m === undefined) {
      m = new Map();
      this.shards[i] = m;
    }
    const before = m.size;
    m.set(key, value);
    this.count += m.size - before;
    return this;
  }

  delete(key: K): boolean {
    const deleted = this.shards[this.shardOf(key)]?.delete(key) === true;
    if (deleted) this.count--;
    return deleted;
  }

  clear(): void {
    this.shards.fill(undefined);
    this.count = 0;
  }

  /**
   * Every entry, shard by shard (insertion order within a shard only). Entries deleted during the
   * walk and not yet visited are skipped, as with a Map; `fn` must not add entries.
   */
  forEach(fn: (value: V, key: K) => void): void {
    for (const m of this.shards) if (m !== undefined) m.forEach(fn);
  }

  /** A snapshot of the values (safe to change the map while going through it). */
  valuesArray(): V[] {
    const out: V[] = [];
    this.forEach((v) => {
      out.push(v);
    });
    return out;
  }
}
