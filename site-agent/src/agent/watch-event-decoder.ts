// How the agent decodes the controller's Watch events. A first snapshot is some 200k objects, and
// the generated decoders spend most of its time allocating (then collecting): a fresh 36-character
// string for every id and reference, a 12-field TopologyObject around every object, a 30-field
// Condition under every rule. This reads the same wire format into the same message types with
// less: a string repeated across objects (a chain's id in each of its rules, a port's id as each of
// its rules' intent) is one string, an object holds only its kind, and rules whose conditions are
// byte-identical (most per-port guard rules) share one frozen Condition. Rules and conditions are
// read field for field here; a rule without NAT targets and a condition without port lists hold
// one shared, frozen empty array. A snapshot's rules are not objects at all: each message's rules
// are positions in it (a RuleChunk: where the rule's bytes and its id's bytes are, and its chain),
// joined into the snapshot's SnapshotRules when its last part is in (snapshot-rules.ts), and a
// rule is decoded when the simulator compiles its chain — which most chains of a site never are on
// a given host. Every other message below an object is still decoded by its generated decoder.
import { BinaryReader, topologypb } from "@isthmus/schema";
import {
  type DecodedSnapshot,
  hashBytes,
  RuleChunk,
  type RuleReader,
  SnapshotChains,
  UndecodableRule,
} from "./snapshot-rules.js";

type Condition = topologypb.Condition;

/** The one empty list that rules without NAT targets and conditions without port lists share. */
const EMPTY: never[] = Object.freeze([]) as unknown as never[];

export interface WatchDecoderOptions {
  /** Slots of the table of recent strings (a power of two; 65 536). */
  stringSlots?: number;
  /** Slots of the table of recent rule conditions (a power of two; 16 384). */
  conditionSlots?: number;
}

/** Strings and conditions seen recently, by a hash of their encoded bytes (direct-mapped: bounded). */
class RecentTables {
  readonly strings: (string | undefined)[];
  readonly stringHashes: Int32Array;
  readonly conditions: ({ bytes: Buffer; value: Condition } | undefined)[];
  readonly conditionHashes: Int32Array;

  constructor(o: WatchDecoderOptions) {
    const s = powerOfTwo("stringSlots", o.stringSlots ?? 1 << 16);
    const c = powerOfTwo("conditionSlots", o.conditionSlots ?? 1 << 14);
    this.strings = new Array<string | undefined>(s).fill(undefined);
    this.stringHashes = new Int32Array(s);
    this.conditions = new Array<{ bytes: Buffer; value: Condition } | undefined>(c).fill(undefined);
    this.conditionHashes = new Int32Array(c);
  }
}

function powerOfTwo(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1 || (n & (n - 1)) !== 0 || n > 1 << 24) {
    throw new Error(`${name} must be a power of two between 1 and 2^24, got ${n}`);
  }
  return n;
}

/** A protobuf reader whose strings come from the recent-strings table when their bytes match. */
class InterningReader extends BinaryReader {
  /** The generated decoders keep their recursion depth on the reader; declared so every reader has one shape. */
  __tsProtoDecodeDepth = 0;
  readonly data: Buffer;

  constructor(
    buf: Uint8Array,
    readonly tables: RecentTables,
  ) {
    super(buf);
    this.data = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  override string(): string {
    const len = this.uint32();
    const start = this.pos;
    const end = start + len;
    if (end > this.len) throw new RangeError("premature EOF");
    this.pos = end;
    if (len === 0) return "";
    const b = this.data;
    let h = 0x811c9dc5 | 0;
    let high = 0;
    for (let i = start; i < end; i++) {
      const c = b[i]!;
      high |= c;
      h = Math.imul(h ^ c, 16777619);
    }
    // Not ASCII: decoded as the generated reader does (invalid sequences become U+FFFD).
    if (high > 0x7f) return b.toString("utf8", start, end);
    h ^= h >>> 16;
    const t = this.tables;
    const slot = h & (t.strings.length - 1);
    const known = t.strings[slot];
    if (known !== undefined && t.stringHashes[slot] === h && known.length === len) {
      let same = true;
      for (let i = 0; i < len; i++) {
        if (known.charCodeAt(i) !== b[start + i]) {
          same = false;
          break;
        }
      }
      if (same) return known;
    }
    const s = b.toString("latin1", start, end);
    t.strings[slot] = s;
    t.stringHashes[slot] = h;
    return s;
  }
}

/** Decodes WatchTopologyResponse events; one per watch client (its tables are its own). */
export class WatchEventDecoder {
  private readonly tables: RecentTables;
  /** Decodes a snapshot rule from its message's bytes when its chain is compiled. */
  private readonly readRule: RuleReader;
  /**
   * The chains of the snapshot being received, shared by its messages' rule chunks; a new table
   * after each whole snapshot (the parts of one a broken stream left behind only add chains
   * without rules to the next one's).
   */
  private chains = new SnapshotChains();

  constructor(o: WatchDecoderOptions = {}) {
    const tables = new RecentTables(o);
    this.tables = tables;
    this.readRule = (data, start, end) => {
      // A reader over the rule alone: a length inside it that runs past the rule is an error.
      const r = new InterningReader(data.subarray(start, end), tables);
      return readRule(r, r.len, tables);
    };
  }

  /**
   * As topologypb.WatchTopologyResponse.decode, with snapshots read as described above: a
   * snapshot (or part)'s `objects` hold no rule, its `ruleChunk` its rules (joinSnapshot makes
   * the whole snapshot from its parts).
   */
  decode(bytes: Uint8Array): topologypb.WatchTopologyResponse & {
    snapshot?: DecodedSnapshot;
    snapshotPart?: DecodedSnapshot;
  } {
    const r = new InterningReader(bytes, this.tables);
    const ev: topologypb.WatchTopologyResponse & {
      snapshot?: DecodedSnapshot;
      snapshotPart?: DecodedSnapshot;
    } = {
      snapshot: undefined,
      change: undefined,
      heartbeatRevision: undefined,
      snapshotPart: undefined,
    };
    while (r.pos < r.len) {
      const tag = r.uint32();
      if (tag === 10) {
        ev.snapshot = this.snapshot(r, r.uint32());
        this.chains = new SnapshotChains();
      } else if (tag === 34) ev.snapshotPart = this.snapshot(r, r.uint32());
      else if (tag === 18) ev.change = this.change(r, r.uint32());
      else if (tag === 24) ev.heartbeatRevision = safeNumber(r.uint64());
      else if ((tag & 7) === 4 || tag === 0) break;
      else r.skip(tag & 7);
    }
    return ev;
  }

  /**
   * A change, as topologypb.TopologyChange.decode reads it, except its rules: read here, each
   * on its own — a rule that does not decode (a condition field this agent does not know, say)
   * becomes an UndecodableRule with its id and chain, failing closed where it is evaluated,
   * instead of failing the whole change (which the agent would fetch again and fail again).
   */
  private change(r: InterningReader, length: number): topologypb.TopologyChange {
    const end = r.pos + length;
    const c: topologypb.TopologyChange = { revision: 0, upserts: [], deletes: [] };
    while (r.pos < end) {
      const tag = r.uint32();
      if (tag === 18) {
        const o = this.object(r, r.uint32(), undefined);
        if (o !== undefined) c.upserts.push(o);
      } else if (tag === 26) c.deletes.push(topologypb.TopologyRef.decode(r, r.uint32()));
      else if (tag === 8) c.revision = safeNumber(r.uint64());
      else if ((tag & 7) === 4 || tag === 0) break;
      else r.skip(tag & 7);
    }
    return c;
  }

  /** A change's rule, decoded now; one whose bytes do not decode as an UndecodableRule. */
  private ruleNow(r: InterningReader, length: number): topologypb.Rule {
    const start = r.pos;
    const end = start + length;
    if (end > r.len) throw new RangeError("premature EOF");
    try {
      const rule = this.readRule(r.data, start, end);
      r.pos = end;
      return rule;
    } catch (err) {
      // Its id and chain, as a snapshot's rules are read (no id: the change is refused, as before).
      r.pos = start;
      scanRule(r, length);
      const id = r.data.toString("utf8", AT.idStart, AT.idEnd);
      const chainId = r.data.toString("utf8", AT.chainStart, AT.chainEnd);
      return new UndecodableRule(
        id,
        chainId,
        new Error(`rule ${id}: cannot be decoded (${(err as Error).message})`),
      );
    }
  }

  private snapshot(r: InterningReader, length: number): DecodedSnapshot {
    const end = r.pos + length;
    const s: DecodedSnapshot = { revision: 0, objects: [], ruleChunk: undefined };
    // Room for as many rules as the message could hold at ~100 bytes a rule (the benchmark's are
    // ~140; the arrays grow past it, and SnapshotRules keeps copies of what they hold).
    const rules = new RuleChunk(r.data, this.readRule, this.chains, Math.ceil(length / 100));
    while (r.pos < end) {
      const tag = r.uint32();
      if (tag === 18) {
        const o = this.object(r, r.uint32(), rules);
        if (o !== undefined) s.objects.push(o);
      } else if (tag === 8) s.revision = safeNumber(r.uint64());
      else if ((tag & 7) === 4 || tag === 0) break;
      else r.skip(tag & 7);
    }
    if (rules.count > 0) s.ruleChunk = rules;
    return s;
  }

  /**
   * An object holding only its kind's field (the last one set, as a oneof reads). A snapshot's
   * rule goes into `rules` instead (undefined is returned; the object's bytes stay where they
   * are); without `rules` (a change) a rule is decoded now.
   */
  private object(
    r: InterningReader,
    length: number,
    rules: RuleChunk | undefined,
  ): topologypb.TopologyObject | undefined {
    const end = r.pos + length;
    const P = topologypb;
    let o: topologypb.TopologyObject | undefined = {};
    let rule = false;
    while (r.pos < end) {
      const tag = r.uint32();
      // Every kind is a length-delimited message; any other wire type is skipped, as generated.
      if ((tag & 7) !== 2 || tag >>> 3 < 1 || tag >>> 3 > 13) {
        if ((tag & 7) === 4 || tag === 0) break;
        r.skip(tag & 7);
        continue;
      }
      const n = r.uint32();
      rule = false;
      // One literal per kind, so each kind's objects share a shape.
      switch (tag >>> 3) {
        case 7:
          if (rules === undefined) {
            o = { rule: this.ruleNow(r, n) };
            break;
          }
          scanRule(r, n);
          rule = true;
          o = undefined;
          break;
        case 4:
          o = { port: P.Port.decode(r, n) };
          break;
        case 6:
          o = { chain: P.Chain.decode(r, n) };
          break;
        case 8:
          o = { ipAddrGroup: P.IpAddrGroup.decode(r, n) };
          break;
        case 10:
          o = { macEntry: P.MacEntry.decode(r, n) };
          break;
        case 11:
          o = { arpEntry: P.ArpEntry.decode(r, n) };
          break;
        case 5:
          o = { route: P.Route.decode(r, n) };
          break;
        case 9:
          o = { portGroup: P.PortGroup.decode(r, n) };
          break;
        case 2:
          o = { bridge: P.Bridge.decode(r, n) };
          break;
        case 3:
          o = { router: P.Router.decode(r, n) };
          break;
        case 1:
          o = { host: P.Host.decode(r, n) };
          break;
        case 12:
          o = { remoteGateway: P.RemoteGateway.decode(r, n) };
          break;
        case 13:
          o = { ipAddrGroupMember: P.IpAddrGroupMember.decode(r, n) };
          break;
      }
    }
    if (!rule) return o;
    rules!.add(AT.start, AT.end, AT.idStart, AT.idEnd, AT.chainStart, AT.chainEnd);
    return undefined;
  }
}

/**
 * Where the snapshot rule scanRule read last is in its message: its bytes [start, end), its id's
 * bytes, its chain (one place for all: ~150k rules a snapshot, each filed before the next is read).
 */
const AT = { start: 0, end: 0, idStart: 0, idEnd: 0, chainStart: 0, chainEnd: 0 };

/**
 * A snapshot rule's place: its id's bytes and its chain are read, everything else (the condition
 * above all) is skipped over without reading. A rule without an id is refused, as the store refuses
 * any object without one.
 */
function scanRule(r: InterningReader, length: number): void {
  const d = r.data;
  const start = r.pos;
  const end = start + length;
  if (end > r.len) throw new RangeError("premature EOF");
  let idStart = 0;
  let idEnd = 0;
  let chainStart = 0;
  let chainEnd = 0;
  // Read in place (~150k rules a snapshot): a Rule's tags and most lengths are one byte; longer
  // varints go through the reader.
  let p = start;
  while (p < end) {
    let tag = d[p++]!;
    if (tag > 0x7f) {
      r.pos = p - 1;
      tag = r.uint32();
      p = r.pos;
    }
    const wireType = tag & 7;
    if (wireType === 2) {
      let n = d[p++]!;
      if (n > 0x7f) {
        r.pos = p - 1;
        n = r.uint32();
        p = r.pos;
      }
      if (tag === 10) {
        idStart = p;
        idEnd = p + n;
      } else if (tag === 18) {
        chainStart = p;
        chainEnd = p + n;
      }
      p += n;
      if (p > end) throw new RangeError("premature EOF");
    } else if (wireType === 4 || tag === 0) break;
    else if (wireType === 0) {
      // Position, action: skipped here (a varint cut short is the rule's decoding error when its
      // chain is compiled).
      while (p < end && (d[p++]! & 0x80) !== 0) {}
    } else {
      r.pos = p;
      r.skip(wireType);
      p = r.pos;
    }
  }
  r.pos = end;
  if (idEnd === idStart) throw new Error("topology rule without an id");
  AT.start = start;
  AT.end = end;
  AT.idStart = idStart;
  AT.idEnd = idEnd;
  AT.chainStart = chainStart;
  AT.chainEnd = chainEnd;
}

/**
 * topologypb.Rule.decode, field for field (RULE_FIELDS; a test holds it to the generated one),
 * except that the condition is shared with earlier rules whose condition bytes were the same.
 */
function readRule(r: InterningReader, end: number, tables: RecentTables): topologypb.Rule {
  const m: topologypb.Rule = {
    id: "",
    chainId: "",
    position: 0,
    condition: undefined,
    action: 0,
    jumpChainId: "",
    natTargets: EMPTY,
    intentId: "",
  };
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag) {
      case 10:
        m.id = r.string();
        continue;
      case 18:
        m.chainId = r.string();
        continue;
      case 24:
        m.position = r.uint32();
        continue;
      case 34:
        m.condition = sharedCondition(r, r.uint32(), tables);
        continue;
      case 40:
        m.action = r.int32();
        continue;
      case 50:
        m.jumpChainId = r.string();
        continue;
      case 58:
        if (m.natTargets === EMPTY) m.natTargets = [];
        m.natTargets.push(topologypb.NatTarget.decode(r, r.uint32()));
        continue;
      case 66:
        m.intentId = r.string();
        continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    r.skip(tag & 7);
  }
  return m;
}

/** A condition, shared with an earlier one whose bytes were the same (the decoder's table). */
function sharedCondition(r: InterningReader, length: number, t: RecentTables): Condition {
  const start = r.pos;
  const end = start + length;
  if (end > r.len) throw new RangeError("premature EOF");
  const b = r.data;
  const h = hashBytes(b, start, end);
  const slot = h & (t.conditions.length - 1);
  const known = t.conditions[slot];
  if (known !== undefined && t.conditionHashes[slot] === h && known.bytes.length === length) {
    let same = true;
    for (let i = 0; i < length; i++) {
      if (known.bytes[i] !== b[start + i]) {
        same = false;
        break;
      }
    }
    if (same) {
      r.pos = end;
      return known.value;
    }
  }
  const value = freezeCondition(decodeCondition(r, end));
  t.conditions[slot] = { bytes: Buffer.from(b.subarray(start, end)), value };
  t.conditionHashes[slot] = h;
  return value;
}

/**
 * Every Condition field's default, as the generated decoder sets them; the prototype of every
 * condition decoded here. Module-private (not frozen: a frozen prototype's properties could not
 * be set on the conditions themselves), and the conditions are frozen.
 */
const CONDITION_DEFAULTS: Condition = {
  ...topologypb.Condition.fromPartial({}),
  inPortIds: EMPTY,
  outPortIds: EMPTY,
};

/**
 * topologypb.Condition.decode, field for field (CONDITION_FIELDS; a test holds it to the generated
 * one), except that the condition holds only the fields on the wire and reads every other one from
 * CONDITION_DEFAULTS, its prototype. A condition has 30 fields and a typical one sets three or
 * four: ~56 bytes instead of ~264, and a 10k-port site's snapshot has ~110k distinct conditions
 * (each benchmark security-group rule its own), all of which survive — about 23 MB less heap to
 * fault in and copy through the young generation. Reading a field gives the same value either way;
 * what differs is only for code that lists own properties (spread, Object.keys, JSON): none does
 * with topology conditions, which are read field by field (sim/rule-compile.ts).
 */
function decodeCondition(r: InterningReader, end: number): Condition {
  // Only the fields on the wire are the condition's own; the rest read through to the defaults.
  const c = Object.create(CONDITION_DEFAULTS) as Condition;
  while (r.pos < end) {
    const tag = r.uint32();
    // Field number << 3 | wire type: 2 = length-delimited (strings, PortRange), 0 = varint.
    switch (tag) {
      case 10:
        if (c.inPortIds === EMPTY) c.inPortIds = [];
        c.inPortIds.push(r.string());
        continue;
      case 16:
        c.invInPorts = r.bool();
        continue;
      case 26:
        if (c.outPortIds === EMPTY) c.outPortIds = [];
        c.outPortIds.push(r.string());
        continue;
      case 32:
        c.invOutPorts = r.bool();
        continue;
      case 42:
        c.portGroupId = r.string();
        continue;
      case 48:
        c.invPortGroup = r.bool();
        continue;
      case 58:
        c.ethSrc = r.string();
        continue;
      case 64:
        c.invEthSrc = r.bool();
        continue;
      case 74:
        c.ethDst = r.string();
        continue;
      case 80:
        c.invEthDst = r.bool();
        continue;
      case 88:
        c.etherType = r.uint32();
        continue;
      case 96:
        c.invEtherType = r.bool();
        continue;
      case 106:
        c.nwSrc = r.string();
        continue;
      case 112:
        c.invNwSrc = r.bool();
        continue;
      case 122:
        c.nwDst = r.string();
        continue;
      case 128:
        c.invNwDst = r.bool();
        continue;
      case 136:
        c.nwProto = r.uint32();
        continue;
      case 144:
        c.invNwProto = r.bool();
        continue;
      case 154:
        c.tpSrc = topologypb.PortRange.decode(r, r.uint32());
        continue;
      case 160:
        c.invTpSrc = r.bool();
        continue;
      case 170:
        c.tpDst = topologypb.PortRange.decode(r, r.uint32());
        continue;
      case 176:
        c.invTpDst = r.bool();
        continue;
      case 186:
        c.ipAddrGroupSrc = r.string();
        continue;
      case 192:
        c.invIpAddrGroupSrc = r.bool();
        continue;
      case 202:
        c.ipAddrGroupDst = r.string();
        continue;
      case 208:
        c.invIpAddrGroupDst = r.bool();
        continue;
      case 216:
        c.matchForwardFlow = r.bool();
        continue;
      case 224:
        c.matchReturnFlow = r.bool();
        continue;
      case 232:
        c.vlan = r.uint32();
        continue;
      case 240:
        c.noVlan = r.bool();
        continue;
      case 248:
        c.matchEstablished = r.bool();
        continue;
      case 256:
        c.invEstablished = r.bool();
        continue;
    }
    if ((tag & 7) === 4 || tag === 0) break;
    // A field this agent does not know narrows what the rule matches in a way it cannot check:
    // skipping it (as protobuf readers do) would match more — an ACCEPT letting through what the
    // controller meant to keep out. The rule fails to decode instead, and fails closed.
    throw new Error(`condition field ${tag >>> 3} is not known to this agent`);
  }
  return c;
}

/** Shared between rules, so nobody may change it (the topology copy is read-only anyway). */
function freezeCondition(c: Condition): Condition {
  Object.freeze(c.inPortIds);
  Object.freeze(c.outPortIds);
  if (c.tpSrc) Object.freeze(c.tpSrc);
  if (c.tpDst) Object.freeze(c.tpDst);
  return Object.freeze(c);
}

function safeNumber(v: bigint | string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`revision ${v} is beyond Number.MAX_SAFE_INTEGER`);
  return n;
}

/** The Rule fields the decoder above reads (the generated Rule's, in field order). */
export const RULE_FIELDS = [
  "id",
  "chainId",
  "position",
  "condition",
  "action",
  "jumpChainId",
  "natTargets",
  "intentId",
] as const;

/** The Condition fields the decoder above reads (the generated Condition's, in field order). */
export const CONDITION_FIELDS = [
  "inPortIds",
  "invInPorts",
  "outPortIds",
  "invOutPorts",
  "portGroupId",
  "invPortGroup",
  "ethSrc",
  "invEthSrc",
  "ethDst",
  "invEthDst",
  "etherType",
  "invEtherType",
  "nwSrc",
  "invNwSrc",
  "nwDst",
  "invNwDst",
  "nwProto",
  "invNwProto",
  "tpSrc",
  "invTpSrc",
  "tpDst",
  "invTpDst",
  "ipAddrGroupSrc",
  "invIpAddrGroupSrc",
  "ipAddrGroupDst",
  "invIpAddrGroupDst",
  "matchForwardFlow",
  "matchReturnFlow",
  "vlan",
  "noVlan",
  "matchEstablished",
  "invEstablished",
] as const;
