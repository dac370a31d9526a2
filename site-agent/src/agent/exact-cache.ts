// The flow table's exact-match cache: full flow keys (KEY_SIZE bytes) → value, in a fixed-size,
// 4-way set-associative table. Keys are hashed and compared as 32-bit words straight from the
// packet's key buffer, so a lookup allocates nothing (a Map would need a string of the key per
// packet). A full set replaces its oldest entry; the bound is the capacity, fixed at creation.
import { KEY_SIZE } from "./flow-key.js";

const WORDS = KEY_SIZE / 4;
const WAYS = 4;

function word(key: Uint8Array, i: number): number {
  const o = i * 4;
  return (key[o]! | (key[o + 1]! << 8) | (key[o + 2]! << 16) | (key[o + 3]! << 24)) >>> 0;
}

export class ExactCache<V> {
  private readonly sets: number;
  private readonly keys: Uint32Array;
  private readonly values: (V | undefined)[];
  /** Per set: the way the next insert into a full set replaces (round robin = oldest first). */
  private readonly next: Uint8Array;
  private count = 0;

  /** A capacity below 4 (one set) disables the cache: every get misses, set does nothing. */
  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0)
      throw new RangeError(`exact cache: capacity must be an integer ≥ 0, got ${capacity}`);
    this.sets = Math.floor(capacity / WAYS);
    const slots = this.sets * WAYS;
    this.keys = new Uint32Array(slots * WORDS);
    this.values = new Array<V | undefined>(slots).fill(undefined);
    this.next = new Uint8Array(this.sets);
  }

  get size(): number {
    return this.count;
  }

  /** FNV-1a over the key's words, and the set it selects. */
  private setOf(key: Uint8Array): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < WORDS; i++) h = Math.imul(h ^ word(key, i), 0x01000193);
    h ^= h >>> 15;
    return (h >>> 0) % this.sets;
  }

  private slotOf(key: Uint8Array, set: number): number {
    const keys = this.keys;
    for (let w = 0; w < WAYS; w++) {
      const slot = set * WAYS + w;
      if (this.values[slot] === undefined) continue;
      const base = slot * WORDS;
      let i = 0;
      while (i < WORDS && keys[base + i] === word(key, i)) i++;
      if (i === WORDS) return slot;
    }
    return -1;
  }

  get(key: Uint8Array): V | undefined {
    if (this.sets === 0) return undefined;
    const slot = this.slotOf(key, this.setOf(key));
    return slot < 0 ? undefined : this.values[slot];
  }

  set(key: Uint8Array, value: V): void {
    if (this.sets === 0) return;
    if (key.length !== KEY_SIZE)
      throw new Error(`exact cache: keys are ${KEY_SIZE} bytes, got ${key.length}`);
    const set = this.setOf(key);
    let slot = this.slotOf(key, set);
    if (slot < 0) {
      for (let w = 0; w < WAYS && slot < 0; w++)
        if (this.values[set * WAYS + w] === undefined) slot = set * WAYS + w;
      if (slot < 0) {
        slot = set * WAYS + this.next[set]!;
        this.next[set] = (this.next[set]! + 1) % WAYS;
      } else this.count++;
      const base = slot * WORDS;
      for (let i = 0; i < WORDS; i++) this.keys[base + i] = word(key, i);
    }
    this.values[slot] = value;
  }

  delete(key: Uint8Array): void {
    if (this.sets === 0) return;
    const slot = this.slotOf(key, this.setOf(key));
    if (slot < 0) return;
    this.values[slot] = undefined;
    this.count--;
  }

  clear(): void {
    this.values.fill(undefined);
    this.count = 0;
  }
}
