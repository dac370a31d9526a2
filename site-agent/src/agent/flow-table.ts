// The userspace flow table: megaflows (a match under a mask, found by tuple-space search over the
// distinct masks) with an exact-match cache in front, so a packet of an established flow costs one
// Map lookup. Bounded, with idle and hard expiry on a clock the caller passes in, per-flow counters,
// and an index from tags to flows so a topology change removes exactly the flows that depended on it.
import { ExactCache } from "./exact-cache.js";
import type { FlowActions } from "./flow-actions.js";
import { applyMask, KEY_SIZE } from "./flow-key.js";

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

/** A flow's tags without repeats; lists are a few entries long, so no Set is built. */
function uniqueTags(tags: readonly string[]): string[] {
  const out: string[] = [];
  for (const t of tags) if (!out.includes(t)) out.push(t);
  return out;
}

export type RemoveReason = "idle" | "hard" | "invalidated" | "replaced" | "deleted";

interface MaskBucket {
  mask: Buffer;
  flows: Map<string, Flow>;
}

export class FlowTable {
  private readonly buckets = new Map<string, MaskBucket>();
  private readonly exact: ExactCache<Flow>;
  private readonly byTag = new Map<string, Set<Flow>>();
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
    const maskKey = req.mask.toString("latin1");
    let bucket = this.buckets.get(maskKey);
    const matchKey = match.toString("latin1");
    const existing = bucket?.flows.get(matchKey);
    if (existing) this.remove(existing, "replaced");
    if (this.count >= this.limits.maxFlows || (!bucket && this.buckets.size >= this.limits.maxMasks)) {
      this.stats.refusedFull++;
      return undefined;
    }
    if (!bucket) {
      bucket = { mask: Buffer.from(req.mask), flows: new Map() };
      this.buckets.set(maskKey, bucket);
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
    };
    bucket.flows.set(matchKey, flow);
    this.count++;
    for (const t of flow.tags) {
      let set = this.byTag.get(t);
      if (!set) {
        set = new Set();
        this.byTag.set(t, set);
      }
      set.add(flow);
    }
    this.stats.installs++;
    return flow;
  }

  remove(flow: Flow, reason: RemoveReason): void {
    if (flow.removed) return;
    const maskKey = flow.mask.toString("latin1");
    const bucket = this.buckets.get(maskKey);
    const matchKey = flow.match.toString("latin1");
    if (!bucket || bucket.flows.get(matchKey) !== flow) {
      throw new Error(`flow table invariant: flow ${flow.id} is not in its mask bucket`);
    }
    bucket.flows.delete(matchKey);
    if (bucket.flows.size === 0) this.buckets.delete(maskKey);
    flow.removed = true; // exact-cache entries pointing at it are dropped lazily on lookup
    this.count--;
    for (const t of flow.tags) {
      const set = this.byTag.get(t);
      set?.delete(flow);
      if (set?.size === 0) this.byTag.delete(t);
    }
    this.stats.removed[reason]++;
    this.onRemove?.(flow, reason);
  }

  /** Removes every flow carrying any of the tags; returns how many. */
  invalidate(tags: Iterable<string>): number {
    let n = 0;
    for (const t of tags) {
      const set = this.byTag.get(t);
      if (!set) continue;
      for (const f of [...set]) {
        this.remove(f, "invalidated");
        n++;
      }
    }
    return n;
  }

  /** Removes idle and hard-expired flows; returns how many. */
  expire(now: number): number {
    let n = 0;
    for (const f of this.flows()) {
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
    for (const f of this.flows()) this.remove(f, "deleted");
    this.exact.clear();
  }

  flows(): Flow[] {
    const out: Flow[] = [];
    for (const b of this.buckets.values()) for (const f of b.flows.values()) out.push(f);
    return out;
  }

  flowsWithTag(tag: string): Flow[] {
    return [...(this.byTag.get(tag) ?? [])];
  }
}
