// The userspace flow table: megaflows (a match under a mask, found by tuple-space search over the
// distinct masks) with an exact-match cache in front, so a packet of an established flow costs one
// Map lookup. Bounded, with idle and hard expiry on a clock the caller passes in, per-flow counters,
// and an index from tags to flows so a topology change removes exactly the flows that depended on it.
import { ExactCache } from "./exact-cache.js";
import type { FlowActions } from "./flow-actions.js";
import { applyMask, KEY_SIZE } from "./flow-key.js";
import { ShardedMap, stringShard } from "./flow-sharded-map.js";

export interface FlowTableLimits {
  /** Megaflows; installs beyond it are refused (counted) until expiry makes room. */
  maxFlows: number;
  /** Exact-match cache entries (4-way set associative: a full set replaces its oldest entry). */
  maxExactEntries: number;
  /** Distinct masks (each costs one lookup per miss in the exact cache). */
  maxMasks: number;
  idleTimeoutMs: number;
  /** 0 = no hard timeout. */
  hardTimeoutMs: number;
}

export const DEFAULT_FLOW_LIMITS: FlowTableLimits = {
  maxFlows: 100_000,
  maxExactEntries: 65_536,
  maxMasks: 256,
  idleTimeoutMs: 60_000,
  hardTimeoutMs: 0,
};

export interface Flow {
  readonly id: number;
  /** key AND mask. */
  readonly match: Buffer;
  readonly mask: Buffer;
  readonly actions: FlowActions;
  readonly tags: readonly string[];
  readonly installedAt: number;
  readonly idleTimeoutMs: number;
  readonly hardTimeoutMs: number;
  lastUsed: number;
  packets: number;
  bytes: number;
  removed: boolean;
  /** Hook for the agent: runs on every hit (flow-state refresh). */
  onHit?: (flow: Flow, now: number) => void;
  /** The table's own: for each tag, this flow's index in the tag's TagList (-1 while it alone
   * carries the tag). */
  readonly tagSlots: number[];
}

export interface InstallRequest {
  match: Buffer;
  mask: Buffer;
  actions: FlowActions;
  tags: readonly string[];
  idleTimeoutMs?: number;
  hardTimeoutMs?: number;
  onHit?: (flow: Flow, now: number) => void;
}

/**
 * A flow's tags without repeats; lists are a few entries long, so no Set is built. A list that
 * has none is kept as it is (the installer hands over its list; a copy per flow would be one
 * more object every scavenge has to move).
 */
function uniqueTags(tags: readonly string[]): readonly string[] {
  let repeats = false;
  for (let i = 1; i < tags.length && !repeats; i++)
    if (tags.lastIndexOf(tags[i]!, i - 1) >= 0) repeats = true;
  if (!repeats) return tags;
  const out: string[] = [];
  for (const t of tags) if (!out.includes(t)) out.push(t);
  return out;
}

export type RemoveReason = "idle" | "hard" | "invalidated" | "replaced" | "deleted";

interface MaskBucket {
  mask: Buffer;
  /** The mask's bytes as a string: the bucket's key in `buckets`. */
  key: string;
  /** By the match's bytes as a string; sharded, so growing never stalls one install for long. */
  flows: ShardedMap<string, Flow>;
}

/**
 * The flows of a tag that more than one flow carries, in an array: each flow keeps its index
 * (Flow.tagSlots), so adding is a push and removing a swap with the last. Tags such as the
 * ingress port's are carried by every flow, and a Set of thousands rehashing inside the install
 * that grew it stalled that flow's setup for milliseconds; an array grows by copying pointers.
 */
class TagList {
  readonly flows: Flow[];
  constructor(a: Flow, b: Flow) {
    this.flows = [a, b];
  }
}

/** Most tags (a connection's conntrack entry) name a single flow, held as it is. */
type TagFlows = Flow | TagList;

function tagFlowsArray(cur: TagFlows): Flow[] {
  return cur instanceof TagList ? [...cur.flows] : [cur];
}

export class FlowTable {
  private readonly buckets = new Map<string, MaskBucket>();
  /**
   * Buckets by the mask Buffer installs passed (the handler shares one Buffer per distinct mask),
   * so an install finds its bucket without turning the mask into a string; checked against
   * `buckets`, as a bucket emptied and made again is a new one.
   */
  private readonly bucketOfMask = new WeakMap<Buffer, MaskBucket>();
  private readonly exact: ExactCache<Flow>;
  private readonly byTag = new ShardedMap<string, TagFlows>(stringShard);
  private readonly scratch = Buffer.alloc(KEY_SIZE);
  private nextId = 1;
  private count = 0;
  readonly stats = {
    exactHits: 0,
    megaflowHits: 0,
    misses: 0,
    installs: 0,
    refusedFull: 0,
    removed: { idle: 0, hard: 0, invalidated: 0, replaced: 0, deleted: 0 } as Record<RemoveReason, number>,
  };
  onRemove?: (flow: Flow, reason: RemoveReason) => void;

  constructor(readonly limits: FlowTableLimits = DEFAULT_FLOW_LIMITS) {
    for (const [k, v] of Object.entries(limits)) {
      if (!Number.isInteger(v) || v < 0) throw new Error(`flow table: limit ${k} must be an integer ≥ 0`);
    }
    this.exact = new ExactCache<Flow>(limits.maxExactEntries);
  }

  get size(): number {
    return this.count;
  }

  get maskCount(): number {
    return this.buckets.size;
  }

  get exactSize(): number {
    return this.exact.size;
  }

  /** Finds the flow for a full key, counting the packet against it. */
  lookup(key: Buffer, bytes: number, now: number): Flow | undefined {
    // The exact cache hashes the key's bytes in place: a hit allocates nothing.
    let flow = this.exact.get(key);
    if (flow !== undefined && !flow.removed) {
      this.stats.exactHits++;
    } else {
      if (flow !== undefined) this.exact.delete(key);
      flow = undefined;
      for (const b of this.buckets.values()) {
        const f = b.flows.get(applyMask(key, b.mask, this.scratch).toString("latin1"));
        if (f !== undefined) {
          flow = f;
          break;
        }
      }
      if (flow === undefined) {
        this.stats.misses++;
        return undefined;
      }
      this.stats.megaflowHits++;
      this.exact.set(key, flow);
    }
    flow.packets++;
    flow.bytes += bytes;
    flow.lastUsed = now;
    flow.onHit?.(flow, now);
    return flow;
  }

  /** Installs a megaflow; returns undefined when a bound refuses it (the caller still forwards). */
  install(req: InstallRequest, now: number): Flow | undefined {
    if (req.match.length !== KEY_SIZE || req.mask.length !== KEY_SIZE) {
      throw new Error(`flow table: match and mask must be ${KEY_SIZE} bytes`);
    }
    // From Buffer's pool (applyMask writes every byte): a fresh ArrayBuffer per flow cost more than
    // the key itself.
    const match = applyMask(req.match, req.mask, Buffer.allocUnsafe(KEY_SIZE));
    let bucket = this.bucketOfMask.get(req.mask);
    // Still in the table and still the same bytes (a caller may reuse a Buffer for another mask).
    if (bucket !== undefined && (this.buckets.get(bucket.key) !== bucket || !bucket.mask.equals(req.mask)))
      bucket = undefined;
    const maskKey = bucket?.key ?? req.mask.toString("latin1");
    bucket ??= this.buckets.get(maskKey);
    if (bucket) this.bucketOfMask.set(req.mask, bucket);
    const matchKey = match.toString("latin1");
    const existing = bucket?.flows.get(matchKey);
    if (existing) this.remove(existing, "replaced");
    if (this.count >= this.limits.maxFlows || (!bucket && this.buckets.size >= this.limits.maxMasks)) {
      this.stats.refusedFull++;
      return undefined;
    }
    if (!bucket) {
      bucket = { mask: Buffer.from(req.mask), key: maskKey, flows: new ShardedMap(stringShard) };
      this.buckets.set(maskKey, bucket);
      this.bucketOfMask.set(req.mask, bucket);
      this.bucketOfMask.set(bucket.mask, bucket); // remove() finds it from flow.mask
    }
    const flow: Flow = {
      id: this.nextId++,
      match,
      mask: bucket.mask,
      actions: req.actions,
      tags: uniqueTags(req.tags),
      installedAt: now,
      idleTimeoutMs: req.idleTimeoutMs ?? this.limits.idleTimeoutMs,
      hardTimeoutMs: req.hardTimeoutMs ?? this.limits.hardTimeoutMs,
      lastUsed: now,
      packets: 0,
      bytes: 0,
      removed: false,
      onHit: req.onHit,
      tagSlots: [],
    };
    bucket.flows.set(matchKey, flow);
    this.count++;
    for (const t of flow.tags) {
      const cur = this.byTag.get(t);
      if (cur === undefined) {
        this.byTag.set(t, flow);
        flow.tagSlots.push(-1);
      } else if (cur instanceof TagList) {
        flow.tagSlots.push(cur.flows.length);
        cur.flows.push(flow);
      } else {
        cur.tagSlots[cur.tags.indexOf(t)] = 0;
        this.byTag.set(t, new TagList(cur, flow));
        flow.tagSlots.push(1);
      }
    }
    this.stats.installs++;
    return flow;
  }

  remove(flow: Flow, reason: RemoveReason): void {
    if (flow.removed) return;
    const bucket = this.bucketOfMask.get(flow.mask) ?? this.buckets.get(flow.mask.toString("latin1"));
    const matchKey = flow.match.toString("latin1");
    if (!bucket || this.buckets.get(bucket.key) !== bucket || bucket.flows.get(matchKey) !== flow) {
      throw new Error(`flow table invariant: flow ${flow.id} is not in its mask bucket`);
    }
    bucket.flows.delete(matchKey);
    if (bucket.flows.size === 0) this.buckets.delete(bucket.key);
    flow.removed = true; // exact-cache entries pointing at it are dropped lazily on lookup
    this.count--;
    for (let k = 0; k < flow.tags.length; k++) {
      const t = flow.tags[k]!;
      const cur = this.byTag.get(t);
      if (cur === flow) this.byTag.delete(t);
      else if (cur instanceof TagList) {
        const at = flow.tagSlots[k]!;
        if (cur.flows[at] !== flow) {
          throw new Error(`flow table invariant: flow ${flow.id} is not at its place in tag ${t}`);
        }
        const last = cur.flows.pop()!;
        if (last !== flow) {
          cur.flows[at] = last;
          last.tagSlots[last.tags.indexOf(t)] = at;
        }
        if (cur.flows.length === 0) this.byTag.delete(t);
      }
    }
    this.stats.removed[reason]++;
    this.onRemove?.(flow, reason);
  }

  /** Removes every flow carrying any of the tags; returns how many. */
  invalidate(tags: Iterable<string>): number {
    let n = 0;
    for (const t of tags) {
      const cur = this.byTag.get(t);
      if (cur === undefined) continue;
      for (const f of tagFlowsArray(cur)) {
        this.remove(f, "invalidated");
        n++;
      }
    }
    return n;
  }

  /** Removes idle and hard-expired flows; returns how many. */
  expire(now: number): number {
    let n = 0;
    for (const f of this.snapshot()) {
      if (f.hardTimeoutMs > 0 && now - f.installedAt >= f.hardTimeoutMs) {
        this.remove(f, "hard");
        n++;
      } else if (f.idleTimeoutMs > 0 && now - f.lastUsed >= f.idleTimeoutMs) {
        this.remove(f, "idle");
        n++;
      }
    }
    return n;
  }

  clear(): void {
    for (const f of this.snapshot()) this.remove(f, "deleted");
    this.exact.clear();
  }

  /** Every flow, by mask bucket and in install order within one (as the dumps have shown them). */
  flows(): Flow[] {
    const out: Flow[] = [];
    for (const b of this.buckets.values()) {
      // A bucket's flows were installed in id order; the shards hold them in another.
      const fs = b.flows.valuesArray().sort((x, y) => x.id - y.id);
      for (const f of fs) out.push(f);
    }
    return out;
  }

  /** Every flow, in no particular order (expiry and clearing need no order). */
  private snapshot(): Flow[] {
    const out: Flow[] = [];
    for (const b of this.buckets.values()) {
      b.flows.forEach((f) => {
        out.push(f);
      });
    }
    return out;
  }

  flowsWithTag(tag: string): Flow[] {
    const cur = this.byTag.get(tag);
    return cur === undefined ? [] : tagFlowsArray(cur);
  }
}
