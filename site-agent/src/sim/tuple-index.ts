// An open-addressing hash table from an IPv4 5-tuple (four 32-bit words) to a small positive
// integer and a number, for the conntrack table's packet path: a lookup or insert hashes numbers
// in place instead of a key string, and an entry is slots in typed arrays — no object the
// collector traces or copies, no pointer array to allocate when the table grows. Linear probing,
// at most half full (grows by doubling), deletion by backward shift so no tombstones accumulate.

const WORDS = 4;
/**
 * The first table holds 2048 entries (112 KB, committed by the OS only as slots are touched):
 * growing rehashes every entry inside the insert that filled the table, in code that has run too
 * rarely to be compiled, which cost 1-5 ms at 512-1024 entries — inside one new connection's flow
 * setup. Starting larger keeps a host's first couple of thousand connections free of it.
 */
const MIN_CAPACITY = 4096;

export class TupleIndex {
  private cap = 0;
  private words = new Uint32Array(0);
  /** Per slot: the entry's id (> 0), or 0 when the slot is empty. */
  private ids = new Int32Array(0);
  private nums = new Float64Array(0);
  size = 0;

  private static hash(a: number, b: number, c: number, d: number): number {
    let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b);
    h = Math.imul(h ^ b ^ (h >>> 13), 0xc2b2ae35);
    h = Math.imul(h ^ c ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ d ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  /** The slot holding the tuple (≥ 0), or -1 - the empty slot where it would go. Needs cap > 0. */
  private probe(a: number, b: number, c: number, d: number): number {
    const mask = this.cap - 1;
    const w = this.words;
    const ids = this.ids;
    for (let i = TupleIndex.hash(a, b, c, d) & mask; ; i = (i + 1) & mask) {
      if (ids[i] === 0) return -1 - i;
      const o = i * WORDS;
      if (w[o] === a && w[o + 1] === b && w[o + 2] === c && w[o + 3] === d) return i;
    }
  }

  /** The slot holding the tuple, or -1. */
  slot(a: number, b: number, c: number, d: number): number {
    if (this.size === 0) return -1;
    const i = this.probe(a >>> 0, b >>> 0, c >>> 0, d >>> 0);
    return i < 0 ? -1 : i;
  }

  /** Id of an occupied slot. */
  idAt(slot: number): number {
    return this.ids[slot]!;
  }

  setIdAt(slot: number, id: number): void {
    if (!(id > 0 && id <= 0x7fffffff)) throw new RangeError(`TupleIndex: id must be 1..2^31-1, got ${id}`);
    this.ids[slot] = id;
  }

  /** Number of an occupied slot. */
  numAt(slot: number): number {
    return this.nums[slot]!;
  }

  setNumAt(slot: number, n: number): void {
    this.nums[slot] = n;
  }

  /** The tuple's id, or 0 when absent. */
  get(a: number, b: number, c: number, d: number): number {
    const i = this.slot(a, b, c, d);
    return i < 0 ? 0 : this.ids[i]!;
  }

  /** Adds or replaces the id (1..2^31-1) and number of the tuple; returns its slot. */
  set(a: number, b: number, c: number, d: number, id: number, num = 0): number {
    if (!(id > 0 && id <= 0x7fffffff)) throw new RangeError(`TupleIndex: id must be 1..2^31-1, got ${id}`);
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    let i = this.cap > 0 ? this.probe(a, b, c, d) : -1;
    if (i < 0) {
      if ((this.size + 1) * 2 > this.cap) {
        this.grow();
        i = this.probe(a, b, c, d);
      }
      i = -1 - i;
      const o = i * WORDS;
      const w = this.words;
      w[o] = a;
      w[o + 1] = b;
      w[o + 2] = c;
      w[o + 3] = d;
      this.size++;
    }
    this.ids[i] = id;
    this.nums[i] = num;
    return i;
  }

  delete(a: number, b: number, c: number, d: number): boolean {
    let i = this.slot(a, b, c, d);
    if (i < 0) return false;
    // Backward-shift deletion: move later entries of the probe run into the hole.
    const mask = this.cap - 1;
    const w = this.words;
    const ids = this.ids;
    ids[i] = 0;
    for (let j = (i + 1) & mask; ids[j] !== 0; j = (j + 1) & mask) {
      const o = j * WORDS;
      const home = TupleIndex.hash(w[o]!, w[o + 1]!, w[o + 2]!, w[o + 3]!) & mask;
      // The entry at j may fill the hole at i unless its home lies cyclically in (i, j].
      const between = i <= j ? home > i && home <= j : home > i || home <= j;
      if (between) continue;
      w.copyWithin(i * WORDS, o, o + WORDS);
      ids[i] = ids[j]!;
      this.nums[i] = this.nums[j]!;
      ids[j] = 0;
      i = j;
    }
    this.size--;
    return true;
  }

  /**
   * Calls `fn` for every entry with its slot (ids and numbers may be changed through the slot
   * meanwhile; adding or deleting may not: collect, then change).
   */
  forEach(
    fn: (a: number, b: number, c: number, d: number, id: number, num: number, slot: number) => void,
  ): void {
    const w = this.words;
    const ids = this.ids;
    for (let i = 0; i < this.cap; i++) {
      const id = ids[i]!;
      if (id === 0) continue;
      const o = i * WORDS;
      fn(w[o]!, w[o + 1]!, w[o + 2]!, w[o + 3]!, id, this.nums[i]!, i);
    }
  }

  private grow(): void {
    const oldWords = this.words;
    const oldIds = this.ids;
    const oldNums = this.nums;
    this.cap = Math.max(MIN_CAPACITY, this.cap * 2);
    this.words = new Uint32Array(this.cap * WORDS);
    this.ids = new Int32Array(this.cap);
    this.nums = new Float64Array(this.cap);
    const w = this.words;
    for (let k = 0; k < oldIds.length; k++) {
      const id = oldIds[k]!;
      if (id === 0) continue;
      const o = k * WORDS;
      const i = -1 - this.probe(oldWords[o]!, oldWords[o + 1]!, oldWords[o + 2]!, oldWords[o + 3]!);
      const n = i * WORDS;
      w[n] = oldWords[o]!;
      w[n + 1] = oldWords[o + 1]!;
      w[n + 2] = oldWords[o + 2]!;
      w[n + 3] = oldWords[o + 3]!;
      this.ids[i] = id;
      this.nums[i] = oldNums[k]!;
    }
  }
}
