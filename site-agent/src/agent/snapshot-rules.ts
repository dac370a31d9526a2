// A snapshot's rules as the agent keeps them: positions in the received Watch messages, not
// objects (sim/packed-rules.ts says why). The decoder records, for each rule of each message, where
// its bytes and its id's bytes are, a hash of the id and its chain; the rules of all the messages
// of one snapshot are then indexed together — by chain (for compiling a chain) and by id (for a
// change that replaces or deletes one) — in typed arrays, with no object or string per rule. A
// rule is decoded when its chain is compiled, from the message that carried it, which stays
// referenced as long as the view holding the rules does (no more bytes than the snapshot's own).
import { topologypb } from "@isthmus/schema";
import type { PackedRules, RuleSnapshot } from "../sim/packed-rules.js";

/** Decodes a rule from bytes [start, end) of a message (throws when they do not decode). */
export type RuleReader = (data: Buffer, start: number, end: number) => topologypb.Rule;

/** FNV-1a over bytes [start, end), folded: rule and chain ids here, rule conditions in the decoder. */
export function hashBytes(b: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5 | 0;
  for (let i = start; i < end; i++) h = Math.imul(h ^ b[i]!, 16777619);
  return h ^ (h >>> 16);
}

/** The same hash over an id's UTF-8 bytes. */
function hashIdString(id: string): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c > 0x7f) {
      const b = Buffer.from(id, "utf8");
      return hashBytes(b, 0, b.length);
    }
    h = Math.imul(h ^ c, 16777619);
  }
  return h ^ (h >>> 16);
}

/**
 * The chains of one snapshot's rules, numbered in the order first seen and shared by the
 * RuleChunks of all its messages: a rule's chain is found from its id's bytes (a hash, then the
 * bytes compared with the id) without making a string per rule, and each chain's id becomes a
 * string once per snapshot. (Per message, a snapshot's rules in id order name nearly every chain
 * in every message: ~14k chains in each of 23 messages, each made a string and looked up again.)
 */
export class SnapshotChains {
  readonly ids: string[] = [];
  private readonly hashes: number[] = [];
  /** Open addressing, linear probing: chain number + 1, 0 = empty; at most half full. */
  private table = new Int32Array(1024);

  /** The number of the chain whose id is bytes [start, end) of `d` (numbered now if new). */
  number(d: Buffer, start: number, end: number): number {
    const h = hashBytes(d, start, end);
    const mask = this.table.length - 1;
    let slot = h & mask;
    for (let v = this.table[slot]!; v !== 0; v = this.table[slot]!) {
      const c = v - 1;
      if (this.hashes[c] === h && isUtf8Of(this.ids[c]!, d, start, end)) return c;
      slot = (slot + 1) & mask;
    }
    const c = this.ids.length;
    this.ids.push(d.toString("utf8", start, end));
    this.hashes.push(h);
    if (2 * (c + 1) > this.table.length) this.rehash();
    else this.table[slot] = c + 1;
    return c;
  }

  /** The number of chain `id`, or -1. */
  find(id: string): number {
    const h = hashIdString(id);
    const mask = this.table.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const v = this.table[slot]!;
      if (v === 0) break;
      if (this.hashes[v - 1] === h && this.ids[v - 1] === id) return v - 1;
    }
    // An id whose bytes were not UTF-8 was hashed as received, not as decoded (U+FFFD for each
    // bad sequence): looked for by its decoded form.
    return id.includes("\uFFFD") ? this.ids.indexOf(id) : -1;
  }

  private rehash(): void {
    this.table = new Int32Array(this.table.length * 2);
    const mask = this.table.length - 1;
    for (let c = 0; c < this.ids.length; c++) {
      let slot = this.hashes[c]! & mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & mask;
      this.table[slot] = c + 1;
    }
  }
}

/** Whether `s` is bytes [start, end) of `d` decoded as UTF-8 (ASCII compared in place). */
function isUtf8Of(s: string, d: Buffer, start: number, end: number): boolean {
  const len = end - start;
  if (s.length === len) {
    let k = 0;
    for (; k < len; k++) {
      const b = d[start + k]!;
      if (b > 0x7f) break;
      if (s.charCodeAt(k) !== b) return false;
    }
    if (k === len) return true;
  }
  return d.toString("utf8", start, end) === s;
}

/** The rules of one received message, in the order they came (joined into SnapshotRules). */
export class RuleChunk {
  count = 0;
  start: Int32Array;
  end: Int32Array;
  idStart: Int32Array;
  idEnd: Int32Array;
  idHash: Int32Array;
  /** The rule's chain's number in `chains`. */
  chain: Int32Array;

  /** `capacity`: rules expected (the arrays grow past it). */
  constructor(
    readonly data: Buffer,
    readonly read: RuleReader,
    readonly chains: SnapshotChains,
    capacity = 64,
  ) {
    const n = Math.max(16, capacity);
    this.start = new Int32Array(n);
    this.end = new Int32Array(n);
    this.idStart = new Int32Array(n);
    this.idEnd = new Int32Array(n);
    this.idHash = new Int32Array(n);
    this.chain = new Int32Array(n);
  }

  /** A rule at bytes [start, end) of the message, its id at [idStart, idEnd), its chain's id at [chainStart, chainEnd). */
  add(
    start: number,
    end: number,
    idStart: number,
    idEnd: number,
    chainStart: number,
    chainEnd: number,
  ): void {
    if (this.count === this.start.length) this.grow();
    const n = this.count++;
    this.start[n] = start;
    this.end[n] = end;
    this.idStart[n] = idStart;
    this.idEnd[n] = idEnd;
    this.idHash[n] = hashBytes(this.data, idStart, idEnd);
    this.chain[n] = this.chains.number(this.data, chainStart, chainEnd);
  }

  private grow(): void {
    const twice = (a: Int32Array) => {
      const b = new Int32Array(a.length * 2);
      b.set(a);
      return b;
    };
    this.start = twice(this.start);
    this.end = twice(this.end);
    this.idStart = twice(this.idStart);
    this.idEnd = twice(this.idEnd);
    this.idHash = twice(this.idHash);
    this.chain = twice(this.chain);
  }
}

/**
 * The object a rule whose bytes did not decode becomes (from a snapshot or a change): its
 * `condition` throws why, which compileRule keeps as the rule's error (fail closed).
 */
export class UndecodableRule implements topologypb.Rule {
  position = 0;
  action = 0;
  jumpChainId = "";
  natTargets: topologypb.NatTarget[] = [];
  intentId = "";

  constructor(
    readonly id: string,
    readonly chainId: string,
    private readonly error: Error,
  ) {}

  get condition(): topologypb.Condition | undefined {
    throw this.error;
  }
}

/**
 * The rules of a whole snapshot (every message's chunk), indexed by chain and by id. What it keeps
 * per rule is copied out of the chunks into arrays of its own (the chunks' arrays, sized for a
 * message, are dropped); the messages' bytes stay, for decoding rules and comparing ids.
 */
export class SnapshotRules implements PackedRules {
  readonly count: number;
  /** Rules decoded into objects so far (for tests and tools: a chain's rules are, when compiled). */
  decoded = 0;
  private readonly data: Buffer[];
  private readonly read: RuleReader[];
  private readonly dataOf: Int32Array;
  private readonly start: Int32Array;
  private readonly end: Int32Array;
  private readonly idStart: Int32Array;
  private readonly idEnd: Int32Array;
  private readonly hash: Int32Array;
  private readonly next: Int32Array;
  private readonly retired: Uint8Array;
  private readonly chainOfRule: Int32Array;
  private readonly chains: SnapshotChains;
  /** Each chain's first rule (-1: none); `next` links the rest. */
  private readonly head: Int32Array;
  /** Open addressing, linear probing: rule index + 1, 0 = empty; at most half full. */
  private readonly table: Int32Array;

  constructor(chunks: RuleChunk[]) {
    if (chunks.length === 0) throw new Error("packed rules of no messages");
    this.chains = chunks[0]!.chains;
    if (chunks.some((c) => c.chains !== this.chains)) {
      throw new Error("packed rules from messages of different snapshots");
    }
    let n = 0;
    for (const c of chunks) n += c.count;
    this.count = n;
    this.data = chunks.map((c) => c.data);
    this.read = chunks.map((c) => c.read);
    this.dataOf = new Int32Array(n);
    this.start = new Int32Array(n);
    this.end = new Int32Array(n);
    this.idStart = new Int32Array(n);
    this.idEnd = new Int32Array(n);
    this.hash = new Int32Array(n);
    this.next = new Int32Array(n).fill(-1);
    this.retired = new Uint8Array(n);
    this.chainOfRule = new Int32Array(n);
    let size = 16;
    while (size < 2 * n) size *= 2;
    this.table = new Int32Array(size);
    this.head = new Int32Array(this.chains.ids.length).fill(-1);
    const tail = new Int32Array(this.chains.ids.length).fill(-1);
    let i = 0;
    for (let k = 0; k < chunks.length; k++) {
      const c = chunks[k]!;
      this.dataOf.fill(k, i, i + c.count);
      this.start.set(c.start.subarray(0, c.count), i);
      this.end.set(c.end.subarray(0, c.count), i);
      this.idStart.set(c.idStart.subarray(0, c.count), i);
      this.idEnd.set(c.idEnd.subarray(0, c.count), i);
      this.hash.set(c.idHash.subarray(0, c.count), i);
      for (let j = 0; j < c.count; j++, i++) {
        const chain = c.chain[j]!;
        this.chainOfRule[i] = chain;
        // Filed at the end of its chain's list (the order the rules came in).
        if (tail[chain] === -1) this.head[chain] = i;
        else this.next[tail[chain]!] = i;
        tail[chain] = i;
        this.insert(i);
      }
    }
  }

  find(id: string): number {
    const h = hashIdString(id);
    const mask = this.table.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const v = this.table[slot]!;
      if (v === 0) return -1;
      const i = v - 1;
      if (this.hash[i] === h && this.idEquals(i, id)) return this.retired[i] ? -1 : i;
    }
  }

  chainOf(i: number): string {
    return this.chains.ids[this.chainOfRule[i]!]!;
  }

  rulesOf(chainId: string): number[] {
    const c = this.chains.find(chainId);
    const out: number[] = [];
    if (c < 0 || c >= this.head.length) return out; // a chain numbered after these rules were joined has none
    for (let i = this.head[c]!; i !== -1; i = this.next[i]!) if (!this.retired[i]) out.push(i);
    return out;
  }

  rule(i: number): topologypb.Rule {
    const k = this.dataOf[i]!;
    this.decoded++;
    try {
      return this.read[k]!(this.data[k]!, this.start[i]!, this.end[i]!);
    } catch (err) {
      const id = this.idOf(i);
      return new UndecodableRule(
        id,
        this.chainOf(i),
        new Error(`rule ${id}: cannot be decoded (${(err as Error).message})`),
      );
    }
  }

  retire(i: number): void {
    this.retired[i] = 1;
  }

  /** The id of rule `i` (decoded from its bytes). */
  idOf(i: number): string {
    return this.data[this.dataOf[i]!]!.toString("utf8", this.idStart[i]!, this.idEnd[i]!);
  }

  /** Each rule's encoded length (its message, without its framing in the snapshot), in order. */
  *ruleLengths(): IterableIterator<number> {
    for (let i = 0; i < this.count; i++) yield this.end[i]! - this.start[i]!;
  }

  /** Files rule `i` by its id; an earlier rule with the same id is retired (the later one is current). */
  private insert(i: number): void {
    const h = this.hash[i]!;
    const mask = this.table.length - 1;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const v = this.table[slot]!;
      if (v === 0) {
        this.table[slot] = i + 1;
        return;
      }
      const j = v - 1;
      if (this.hash[j] === h && this.sameId(i, j)) {
        this.retired[j] = 1;
        this.table[slot] = i + 1;
        return;
      }
    }
  }

  private idBytes(i: number): Buffer {
    return this.data[this.dataOf[i]!]!.subarray(this.idStart[i]!, this.idEnd[i]!);
  }

  private sameId(i: number, j: number): boolean {
    return this.idBytes(i).equals(this.idBytes(j));
  }

  private idEquals(i: number, id: string): boolean {
    return isUtf8Of(id, this.data[this.dataOf[i]!]!, this.idStart[i]!, this.idEnd[i]!);
  }
}

/** A decoded snapshot or part of one: `objects` without rules, its rules packed in `ruleChunk`. */
export type DecodedSnapshot = topologypb.TopologySnapshot & { ruleChunk?: RuleChunk };

/** Objects and rules a decoded snapshot (or part) holds. */
export function snapshotSize(s: DecodedSnapshot): number {
  return s.objects.length + (s.ruleChunk?.count ?? 0);
}

/**
 * One snapshot from its decoded parts, in order: the objects together, the rules packed and
 * indexed (a snapshot not sent in parts is its own one part).
 */
export function joinSnapshot(parts: DecodedSnapshot[]): RuleSnapshot {
  if (parts.length === 0) throw new Error("a snapshot of no parts");
  const revision = parts[0]!.revision;
  let objects: topologypb.TopologyObject[];
  if (parts.length === 1) objects = parts[0]!.objects;
  else {
    // One array of the final size, filled once (not grown object by object).
    let n = 0;
    for (const p of parts) n += p.objects.length;
    objects = new Array<topologypb.TopologyObject>(n);
    let at = 0;
    for (const p of parts) for (const o of p.objects) objects[at++] = o;
  }
  const chunks: RuleChunk[] = [];
  for (const p of parts) if (p.ruleChunk) chunks.push(p.ruleChunk);
  return { revision, objects, packedRules: chunks.length > 0 ? new SnapshotRules(chunks) : undefined };
}

/** Bytes of a snapshot encoded as one TopologySnapshot message (its packed rules as objects again). */
export function snapshotEncodedBytes(s: RuleSnapshot): number {
  const varint = (n: number) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);
  let n = topologypb.TopologySnapshot.encode({ revision: s.revision, objects: s.objects }).finish().length;
  const p = s.packedRules;
  if (p === undefined) return n;
  if (!(p instanceof SnapshotRules))
    throw new Error("snapshotEncodedBytes: packed rules the decoder did not make");
  // Each rule is a TopologyObject { rule = 7 } in the snapshot's objects (field 2): one-byte tags.
  for (const len of p.ruleLengths()) {
    const object = 1 + varint(len) + len;
    n += 1 + varint(object) + object;
  }
  return n;
}
