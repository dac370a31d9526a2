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

function varint(n: number): number[] {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`cannot encode ${n} as a varint`);
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
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
  const head: number[] = revision === 0 ? [] : [0x08, ...varint(revision)];
  let inner = head.length;
  for (const b of bodies) inner += 1 + varint(b.length).length + b.length;
  const outer = [(FIELD[field] << 3) | 2, ...varint(inner)];
  const buf = Buffer.allocUnsafe(outer.length + inner);
  let at = 0;
  for (const x of [...outer, ...head]) buf[at++] = x;
  for (const b of bodies) {
    buf[at++] = 0x12; // TopologySnapshot.objects, field 2, length-delimited
    for (const x of varint(b.length)) buf[at++] = x;
    b.copy(buf, at);
    at += b.length;
  }
  return new EncodedWatchEvent(buf);
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
