// Longest-prefix-match over IPv4 routes, rebuilt when a router's routes change. A binary trie on
// destination bits; each node holds the routes of exactly that prefix. Lookup collects matching
// nodes from longest to shortest so source-prefix filtering can fall back to a shorter prefix.
import type { Cidr4 } from "../packets/addr.js";

export interface LpmEntry {
  dst: Cidr4;
  src: Cidr4;
  weight: number;
}

/** What a lookup looked at (filled by `lookup`, reused by the caller). */
export interface LpmInfo {
  usedSrc: boolean;
  dstBits: number;
}

interface Node<T> {
  zero: Node<T> | null;
  one: Node<T> | null;
  entries: T[] | null;
}

export class LpmTrie<T extends LpmEntry> {
  private readonly root: Node<T> = { zero: null, one: null, entries: null };
  private readonly stack: Node<T>[] = new Array(33);
  size = 0;

  insert(e: T): void {
    let n = this.root;
    for (let i = 0; i < e.dst.len; i++) {
      const bit = (e.dst.addr >>> (31 - i)) & 1;
      let next = bit ? n.one : n.zero;
      if (!next) {
        next = { zero: null, one: null, entries: null };
        if (bit) n.one = next;
        else n.zero = next;
      }
      n = next;
    }
    if (!n.entries) n.entries = [];
    n.entries.push(e);
    // Lower weight first so lookup can stop at the first usable weight class.
    n.entries.sort((a, b) => a.weight - b.weight);
    this.size++;
  }

  /**
   * Routes usable for (dst, src), written to `out` (their count is returned): from the longest
   * matching prefix that has any route whose source prefix contains `src`, those of the lowest
   * weight (ECMP set). `info.usedSrc` is set when a source prefix was consulted (so the caller can
   * widen the flow mask only then); `info.dstBits` is how many leading bits of `dst` the walk
   * examined — every address sharing them takes the same path through the trie.
   */
  lookup(dst: number, src: number, out: T[], info: LpmInfo): number {
    let depth = 0;
    let n: Node<T> | null = this.root;
    let level = 0;
    for (; n; level++) {
      if (n.entries) this.stack[depth++] = n;
      // A leaf ends the walk without looking at the next bit.
      if (level === 32 || (n.zero === null && n.one === null)) break;
      n = ((dst >>> (31 - level)) & 1) === 1 ? n.one : n.zero;
    }
    // Ended at a leaf or after 32 bits (`level` bits examined), or on a missing child (bit
    // `level - 1` was the last examined): `level` either way.
    info.dstBits = level;
    let count = 0;
    for (let i = depth - 1; i >= 0; i--) {
      const entries = this.stack[i]!.entries!;
      let best = -1;
      for (let k = 0; k < entries.length; k++) {
        const e = entries[k]!;
        if (e.src.len > 0) info.usedSrc = true;
        if ((src & e.src.mask) >>> 0 !== e.src.addr) continue;
        if (best < 0) best = e.weight;
        if (e.weight !== best) break;
        out[count++] = e;
      }
      if (count > 0) break;
    }
    return count;
  }
}
