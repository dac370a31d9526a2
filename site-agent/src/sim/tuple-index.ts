// An open-addressing hash table from an IPv4 5-tuple (four 32-bit words) to a value, for the
// conntrack table's packet path: a lookup or insert hashes numbers in place instead of a key
// string (which a Map would flatten and hash per packet). Linear probing, at most half full
// (grows by doubling), deletion by backward shift so no tombstones accumulate.

const WORDS = 4;
const MIN_CAPACITY = 256;

export class TupleIndex<V> {
  private cap = 0;
  private words = new Uint32Array(0);
  private vals: (V | undefined)[] = [];
  size = 0;

  private static hash(a: number, b: number, c: number, d: number): number {
    let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b);
    h = Math.imul(h ^ b ^ (h >>> 13), 0xc2b2ae35);
    h = Math.imul(h ^ c ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ d ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  /** The slot holding the tuple, or -1. */
  private find(a: number, b: number, c: number, d: number): number {
    if (this.size === 0) return -1;
    const mask = this.cap - 1;
    const w = this.words;
    for (let i = TupleIndex.hash(a, b, c, d) & mask; ; i = (i + 1) & mask) {
      if (this.vals[i] === undefined) return -1;
      const o = i * WORDS;
      if (w[o] === a && w[o + 1] === b && w[o + 2] === c && w[o + 3] === d) return i;
    }
  }

  get(a: number, b: number, c: number, d: number): V | undefined {
    const i = this.find(a >>> 0, b >>> 0, c >>> 0, d >>> 0);
    return i < 0 ? undefined : this.vals[i];
  }

  /** Adds or replaces the value of the tuple. */
  set(a: number, b: number, c: number, d: number, v: V): void {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    const at = this.find(a, b, c, d);
    if (at >= 0) {
      this.vals[at] = v;
      return;
    }
    if ((this.size + 1) * 2 > this.cap) this.grow();
    this.place(a, b, c, d, v);
    this.size++;
  }

  delete(a: number, b: number, c: number, d: number): boolean {
    let i = this.find(a >>> 0, b >>> 0, c >>> 0, d >>> 0);
    if (i < 0) return false;
    // Backward-shift deletion: move later entries of the probe run into the hole.
    const mask = this.cap - 1;
    const w = this.words;
    this.vals[i] = undefined;
    for (let j = (i + 1) & mask; this.vals[j] !== undefined; j = (j + 1) & mask) {
      const o = j * WORDS;
      const home = TupleIndex.hash(w[o]!, w[o + 1]!, w[o + 2]!, w[o + 3]!) & mask;
      // The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (between) continue;
      w.copyWithin(i * WORDS, o, o + WORDS);
      this.vals[i] = this.vals[j];
      this.vals[j] = undefined;
      i = j;
    }
    this.size--;
    return true;
  }

  /** Every value (a snapshot: deleting while iterating the result is safe). */
  values(): V[] {
    const out: V[] = [];
    for (const v of this.vals) if (v !== undefined) out.push(v);
    return out;
  }

  private place(a: number, b: number, c: number, d: number, v: V): void {
    const mask = this.cap - 1;
    let i = TupleIndex.hash(a, b, c, d) & mask;
    while (this.vals[i] !== undefined) i = (i + 1) & mask;
    const o = i * WORDS;
    const w = this.words;
    w[o] = a;
    w[o + 1] = b;
    w[o + 2] = c;
    w[o + 3] = d;
    this.vals[i] = v;
  }

  private grow(): void {
    const oldWords = this.words;
    const oldVals = this.vals;
    this.cap = Math.max(MIN_CAPACITY, this.cap * 2);
    this.words = new Uint32Array(this.cap * WORDS);
    this.vals = new Array<V | undefined>(this.cap).fill(undefined);
    for (let i = 0; i < oldVals.length; i++) {
      const v = oldVals[i];
      if (v === undefined) continue;
      const o = i * WORDS;
      this.place(oldWords[o]!, oldWords[o + 1]!, oldWords[o + 2]!, oldWords[o + 3]!, v);
    }
  }
}
