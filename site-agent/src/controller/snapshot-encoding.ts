// Snapshot events built straight from the stored bytes: the database keeps every topology object
// encoded, and a TopologySnapshot is a revision plus those encodings as a repeated field, so
// the controller frames them without decoding and re-encoding hundreds of thousands of objects.
// The TopologyService definition here passes such pre-encoded events through untouched.
import { BinaryReader, topologypb } from "@isthmus/schema";

/** A WatchTopologyResponse already in wire form. */
export class EncodedWatchEvent {
  constructor(readonly bytes: Buffer) {}
}

/** WatchTopologyResponse field numbers of the two snapshot events (topology.proto). */
const FIELD = { snapshot: 1, snapshotPart: 4 } as const;

function varintLength(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`cannot encode ${n} as a varint`);
  let len = 1;
  while (n > 0x7f) {
    n = Math.floor(n / 0x80);
    len++;
  }
  return len;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n > 0x7f) {
    buf[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  buf[at++] = n;
  return at;
}

/**
 * A snapshot event's objects already framed as TopologySnapshot's repeated field, reusable under
 * any revision and either field: a mirror keeps one per part and re-frames only parts that changed.
 * The framed bytes live inside the last event built (no second copy of them is kept).
 */
export class SnapshotPartFrame {
  private constructor(
    private framed: Buffer,
    readonly objects: number,
  ) {}

  /** Frames `bodies`, each an encoded TopologyObject. */
  static of(bodies: readonly Buffer[]): SnapshotPartFrame {
    let len = 0;
    for (const b of bodies) len += 1 + varintLength(b.length) + b.length;
    const buf = Buffer.allocUnsafe(len);
    let at = 0;
    for (const b of bodies) {
      buf[at++] = 0x12; // TopologySnapshot.objects, field 2, length-delimited
      at = writeVarint(buf, at, b.length);
      at += b.copy(buf, at);
    }
    return new SnapshotPartFrame(buf, bodies.length);
  }

  /** The event (`snapshot` or `snapshot_part`) at `revision` with these objects. */
  event(field: keyof typeof FIELD, revision: number): EncodedWatchEvent {
    const head = revision === 0 ? 0 : 1 + varintLength(revision);
    const inner = head + this.framed.length;
    const buf = Buffer.allocUnsafe(1 + varintLength(inner) + inner);
    buf[0] = (FIELD[field] << 3) | 2;
    let at = writeVarint(buf, 1, inner);
    if (revision !== 0) {
      buf[at++] = 0x08; // TopologySnapshot.revision, field 1, varint
      at = writeVarint(buf, at, revision);
    }
    this.framed.copy(buf, at);
    this.framed = buf.subarray(at);
    return new EncodedWatchEvent(buf);
  }
}

/**
 * One snapshot event (`snapshot` or `snapshot_part`) at `revision` holding `bodies`, each an
 * encoded TopologyObject — byte for byte what WatchTopologyResponse.encode would produce.
 */
export function encodeSnapshotEvent(
  field: keyof typeof FIELD,
  revision: number,
  bodies: readonly Buffer[],
): EncodedWatchEvent {
  return SnapshotPartFrame.of(bodies).event(field, revision);
}

/**
 * The field agents never read, by the TopologyObject field holding the kind (its first byte):
 * `intent_id` of a rule (Rule 8), a port (Port 17) and an address-group member
 * (IpAddrGroupMember 4) — in a 10k-port site's snapshot 5.7, 0.5 and 0.4 of its 30.6 MB, and
 * in a rule 38 of its ~150 bytes.
 */
const AGENT_SKIPS = new Map<number, number>([
  [(7 << 3) | 2, 8],
  [(4 << 3) | 2, 17],
  [(13 << 3) | 2, 4],
]);

/**
 * A stored object as the mirror frames it for agents: without its `intent_id` (AGENT_SKIPS).
 * The database keeps it (an operator's way from a derived object to the intent it came from).
 * Other kinds, objects without one, and bytes that are not one well-formed object come back as
 * they are (the agent judges those as before).
 */
export function agentBody(body: Buffer): Buffer {
  const head = body[0]!;
  const skip = AGENT_SKIPS.get(head);
  if (skip === undefined) return body;
  try {
    const r = new BinaryReader(body);
    r.pos = 1;
    const len = r.uint32();
    const start = r.pos;
    if (start + len !== body.length) return body;
    const cuts: number[] = [];
    while (r.pos < body.length) {
      const at = r.pos;
      const [field, wireType] = r.tag();
      r.skip(wireType);
      if (field === skip) cuts.push(at, r.pos);
    }
    if (cuts.length === 0 || r.pos !== body.length) return body;
    let kept = len;
    for (let i = 0; i < cuts.length; i += 2) kept -= cuts[i + 1]! - cuts[i]!;
    const out = Buffer.allocUnsafe(1 + varintLength(kept) + kept);
    out[0] = head;
    let to = writeVarint(out, 1, kept);
    let from = start;
    for (let i = 0; i < cuts.length; i += 2) {
      to += body.copy(out, to, from, cuts[i]!);
      from = cuts[i + 1]!;
    }
    body.copy(out, to, from);
    return out;
  } catch {
    return body;
  }
}

/** TopologyService whose Watch stream also takes EncodedWatchEvent values as they are. */
export const topologyServiceDefinition = {
  ...topologypb.TopologyServiceService,
  watch: {
    ...topologypb.TopologyServiceService.watch,
    responseSerialize: (value: topologypb.WatchTopologyResponse | EncodedWatchEvent): Buffer =>
      value instanceof EncodedWatchEvent
        ? value.bytes
        : topologypb.TopologyServiceService.watch.responseSerialize(value),
  },
};
