// Longest-prefix-match over IPv4 routes, rebuilt when a router's routes change. A binary trie on
// destination bits; each node holds the routes of exactly that prefix. Lookup collects matching
// nodes from longest to shortest so source-prefix filtering can fall back to a shorter prefix.
import type { Cidr4 } from "../packets/addr.js";

export interface LpmEntry {
  dst: Cidr4;
  src: Cidr4;
  weight: number;
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
   * Routes usable for (dst, src): from the longest matching prefix that has any route whose
   * source prefix contains `src`, those of the lowest weight (ECMP set). `usedSrc` is set when a
   * source prefix was consulted (so the caller can widen the flow mask only then).
   */
  lookup(dst: number, src: number, out: T[], usedSrc: { v: boolean }): T[] {
    out.length = 0;
    let depth = 0;
    let n: Node<T> | null = this.root;
    for (let level = 0; n; level++) {
      if (n.entries) this.stack[depth++] = n;
      if (level === 32) break;
      n = ((dst >>> (31 - level)) & 1) === 1 ? n.one : n.zero;
    }
    for (let i = depth - 1; i >= 0; i--) {
      const entries = this.stack[i]!.entries!;
      let best = -1;
      for (const e of entries) {
        if (e.src.len > 0) usedSrc.v = true;
        if ((src & e.src.mask) >>> 0 !== e.src.addr) continue;
        if (best < 0) best = e.weight;
        if (e.weight !== best) break;
        out.push(e);
      }
      if (out.length > 0) break;
    }
    return out;
  }
}
