// Snapshot events built straight from the stored bytes: the database keeps every topology object
// encoded, and a TopologySnapshot is a revision plus those encodings as a repeated field, so
// the controller frames them without decoding and re-encoding hundreds of thousands of objects.
// The TopologyService definition here passes such pre-encoded events through untouched.
import { topologypb } from "@isthmus/schema";

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
