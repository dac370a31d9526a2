// Pre-partitions a chain's rules so evaluation does not walk every rule: a run of rules that all
// start with an exact protocol (optionally an exact ether type) is indexed by (ether type,
// protocol) and, for rules on one destination port, by that port. Evaluation visits only the
// rules a packet could match, in position order, and reads the same packet fields a linear walk
// would have read, so results and megaflow masks are the linear walk's (see chain-eval.ts).
import type { CompiledRule } from "./rule-compile.js";

/** Runs shorter than this are walked linearly (the index would cost more than it saves). */
export const MIN_INDEXED_RUN = 8;
/** Bucket key for rules without an ether type, used for ether types no rule of the run names. */
const ANY_ETHER_TYPE = 0x10000;

export interface RuleBucket {
  /** Rules of the bucket evaluated one by one (not on a single destination port), in order. */
  readonly others: CompiledRule[];
  /** Destination port → rules of the bucket on exactly that port, in order. */
  readonly byPort: Map<number, CompiledRule[]>;
  /** Chain index of the first single-port rule (the linear walk reads tp_dst there first). */
  readonly firstPortRule: number;
}

export interface IndexedRun {
  /** Chain indexes [start, end) of the run. */
  readonly start: number;
  readonly end: number;
  /** Ether types the run's rules name; other ether types use the rules that name none. */
  readonly etherTypes: Set<number>;
  /** Whether some rule of the run names no ether type. */
  readonly anyEtherType: boolean;
  readonly buckets: Map<number, RuleBucket>;
}

/** A linear run is [start, end) walked rule by rule; an indexed run goes through its buckets. */
export type RuleRun =
  | { readonly start: number; readonly end: number; readonly buckets?: undefined }
  | IndexedRun;

export function bucketKey(etherType: number, proto: number): number {
  return etherType * 256 + proto;
}

/** Which bucket ether type a packet's ether type selects in `run`. */
export function bucketEtherType(run: IndexedRun, etherType: number): number {
  return run.etherTypes.has(etherType) ? etherType : ANY_ETHER_TYPE;
}

/**
 * Rules whose first condition read (in chain-eval's `matches` order) is the ether type or the
 * protocol, with an exact, non-inverted protocol: skipping one whose protocol differs reads what
 * the linear walk would have read before failing it.
 */
function indexable(r: CompiledRule): boolean {
  const c = r.cond;
  if (r.error !== null || c === null) return false;
  if (c.nwProto === 0 || c.invNwProto) return false;
  if (c.etherType !== 0 && c.invEtherType) return false;
  return (
    c.inPorts === null &&
    c.outPorts === null &&
    c.portGroupId === "" &&
    c.ethSrc < 0 &&
    c.ethDst < 0 &&
    c.vlan === 0 &&
    !c.noVlan
  );
}

/** On one destination port, with nothing read between the protocol and tp_dst. */
function singlePort(r: CompiledRule): boolean {
  const c = r.cond!;
  return c.tpSrcStart < 0 && c.tpDstStart >= 0 && c.tpDstStart === c.tpDstEnd && !c.invTpDst;
}

function buildRun(rules: CompiledRule[], start: number, end: number): IndexedRun {
  const etherTypes = new Set<number>();
  let anyEtherType = false;
  for (let i = start; i < end; i++) {
    const et = rules[i]!.cond!.etherType;
    if (et === 0) anyEtherType = true;
    else etherTypes.add(et);
  }
  const lists = new Map<number, number[]>();
  const add = (key: number, i: number) => {
    let l = lists.get(key);
    if (!l) {
      l = [];
      lists.set(key, l);
    }
    l.push(i);
  };
  for (let i = start; i < end; i++) {
    const c = rules[i]!.cond!;
    if (c.etherType !== 0) add(bucketKey(c.etherType, c.nwProto), i);
    else {
      // No ether type: a candidate for every ether type the run names, and for all the others.
      add(bucketKey(ANY_ETHER_TYPE, c.nwProto), i);
      for (const et of etherTypes) add(bucketKey(et, c.nwProto), i);
    }
  }
  const buckets = new Map<number, RuleBucket>();
  for (const [key, idx] of lists) {
    idx.sort((a, b) => a - b);
    const others: CompiledRule[] = [];
    const byPort = new Map<number, CompiledRule[]>();
    let firstPortRule = Number.POSITIVE_INFINITY;
    for (const i of idx) {
      const r = rules[i]!;
      if (!singlePort(r)) {
        others.push(r);
        continue;
      }
      if (firstPortRule === Number.POSITIVE_INFINITY) firstPortRule = i;
      const port = r.cond!.tpDstStart;
      let l = byPort.get(port);
      if (!l) {
        l = [];
        byPort.set(port, l);
      }
      l.push(r);
    }
    buckets.set(key, { others, byPort, firstPortRule });
  }
  return { start, end, etherTypes, anyEtherType, buckets };
}

/** Splits `rules` (in evaluation order, each with its `index` set) into linear and indexed runs. */
export function indexRules(rules: CompiledRule[]): RuleRun[] {
  const runs: RuleRun[] = [];
  let linearStart = 0;
  let i = 0;
  while (i < rules.length) {
    if (!indexable(rules[i]!)) {
      i++;
      continue;
    }
    let j = i;
    while (j < rules.length && indexable(rules[j]!)) j++;
    if (j - i >= MIN_INDEXED_RUN) {
      if (i > linearStart) runs.push({ start: linearStart, end: i });
      runs.push(buildRun(rules, i, j));
      linearStart = j;
    }
    i = j;
  }
  if (rules.length > linearStart || runs.length === 0) runs.push({ start: linearStart, end: rules.length });
  return runs;
}
