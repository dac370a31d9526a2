// raft-ts WAL: the on-disk record format. Every record is framed as
//   u32 payload length | u32 CRC-32 of (type byte + payload) | u8 type | payload
// (little endian), so a torn or flipped record is detected before anything trusts its contents.
import * as zlib from "node:zlib";
import { type Entry, EntryType, type HardState } from "./types.js";

export const RECORD_HEADER_BYTES = 9;
/** Magic at the start of every segment's header record ("ISWL"), so a stray file is never replayed. */
export const SEGMENT_MAGIC = 0x4c575349;
export const WAL_VERSION = 1;

export enum RecordType {
  SegmentHeader = 1,
  Entry = 2,
  HardState = 3,
  /**
   * The log was replaced or compacted by a snapshot at (index, term); the snapshot itself is a file.
   * Current records also say what remains: `replaced` (the log after the snapshot was discarded),
   * or else `keptAfter`, the last entry dropped (entries from keptAfter.index + 1 on stay, which
   * may lie behind the snapshot: a compaction keeps entries for slow followers). Records from
   * before that (16-byte payload) carry neither.
   */
  SnapshotMarker = 4,
}

export type WalRecord =
  | { type: RecordType.SegmentHeader; version: number; seq: number }
  | { type: RecordType.Entry; entry: Entry }
  | { type: RecordType.HardState; hardState: HardState }
  | {
      type: RecordType.SnapshotMarker;
      index: number;
      term: number;
      keptAfter?: { index: number; term: number };
      replaced?: boolean;
    };

// CRC-32 (IEEE). node:zlib has a native crc32 from Node 20.15; older 20.x releases fall back to a
// table-driven implementation of the same polynomial, so files stay readable across versions.
const nativeCrc32 = (zlib as unknown as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
let table: Uint32Array | undefined;
function tableCrc32(data: Uint8Array): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = table[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
export function crc32(data: Uint8Array): number {
  return nativeCrc32 ? nativeCrc32(data) >>> 0 : tableCrc32(data);
}

const TWO32 = 2 ** 32;
function putU64(buf: Buffer, off: number, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0)
    throw new RangeError(`raft wal: ${n} is not a non-negative safe integer`);
  buf.writeUInt32LE(n % TWO32, off);
  buf.writeUInt32LE(Math.floor(n / TWO32), off + 4);
}
function getU64(buf: Buffer, off: number): number {
  const hi = buf.readUInt32LE(off + 4);
  if (hi >= 2 ** 21) throw new RangeError("raft wal: u64 field exceeds 2^53");
  return hi * TWO32 + buf.readUInt32LE(off);
}

function frame(type: RecordType, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeUInt8(type, 8);
  payload.copy(out, RECORD_HEADER_BYTES);
  out.writeUInt32LE(crc32(out.subarray(8)), 4);
  return out;
}

export function encodeRecord(rec: WalRecord): Buffer {
  switch (rec.type) {
    case RecordType.SegmentHeader: {
      const p = Buffer.alloc(13);
      p.writeUInt32LE(SEGMENT_MAGIC, 0);
      p.writeUInt8(rec.version, 4);
      putU64(p, 5, rec.seq);
      return frame(rec.type, p);
    }
    case RecordType.Entry: {
      const e = rec.entry;
      const p = Buffer.allocUnsafe(17 + e.data.byteLength);
      putU64(p, 0, e.term);
      putU64(p, 8, e.index);
      p.writeUInt8(e.type, 16);
      p.set(e.data, 17);
      return frame(rec.type, p);
    }
    case RecordType.HardState: {
      const vote = Buffer.from(rec.hardState.vote, "utf8");
      const p = Buffer.allocUnsafe(16 + vote.length);
      putU64(p, 0, rec.hardState.term);
      putU64(p, 8, rec.hardState.commit);
      vote.copy(p, 16);
      return frame(rec.type, p);
    }
    case RecordType.SnapshotMarker: {
      const legacy = rec.keptAfter === undefined && rec.replaced === undefined;
      const p = Buffer.allocUnsafe(legacy ? 16 : 33);
      putU64(p, 0, rec.index);
      putU64(p, 8, rec.term);
      if (!legacy) {
        const kept = rec.keptAfter ?? { index: rec.index, term: rec.term };
        putU64(p, 16, kept.index);
        putU64(p, 24, kept.term);
        p.writeUInt8(rec.replaced ? 1 : 0, 32);
      }
      return frame(rec.type, p);
    }
  }
}

/** Why a record at some offset could not be read. `torn` means it runs past the end of the data. */
export type DecodeFailure = { ok: false; torn: boolean; reason: string };
export type DecodeResult = { ok: true; record: WalRecord; size: number } | DecodeFailure;

/** Decodes the record starting at `off` in `buf`; never throws on bad bytes, reports them instead. */
export function decodeRecord(buf: Buffer, off: number, maxRecordBytes: number): DecodeResult {
  if (buf.length - off < RECORD_HEADER_BYTES) {
    return { ok: false, torn: true, reason: "truncated record header" };
  }
  const len = buf.readUInt32LE(off);
  if (len > maxRecordBytes) {
    return { ok: false, torn: false, reason: `record length ${len} exceeds the limit ${maxRecordBytes}` };
  }
  const end = off + RECORD_HEADER_BYTES + len;
  if (end > buf.length)
    return { ok: false, torn: true, reason: `record of ${len} bytes runs past end of file` };
  const stored = buf.readUInt32LE(off + 4);
  const body = buf.subarray(off + 8, end);
  const actual = crc32(body);
  if (stored !== actual) {
    return {
      ok: false,
      torn: false,
      reason: `checksum mismatch (stored ${stored.toString(16)}, computed ${actual.toString(16)})`,
    };
  }
  const type = body.readUInt8(0);
  const p = body.subarray(1);
  try {
    const record = decodePayload(type, p);
    return { ok: true, record, size: RECORD_HEADER_BYTES + len };
  } catch (err) {
    return { ok: false, torn: false, reason: (err as Error).message };
  }
}

function decodePayload(type: number, p: Buffer): WalRecord {
  switch (type) {
    case RecordType.SegmentHeader:
      if (p.length !== 13 || p.readUInt32LE(0) !== SEGMENT_MAGIC) throw new Error("bad segment header");
      return { type, version: p.readUInt8(4), seq: getU64(p, 5) };
    case RecordType.Entry: {
      if (p.length < 17) throw new Error("entry record too short");
      const etype = p.readUInt8(16);
      if (etype !== EntryType.Normal && etype !== EntryType.ConfChange)
        throw new Error(`bad entry type ${etype}`);
      // Copy out of the (possibly large, shared) file buffer so a cached entry does not pin it.
      const data = new Uint8Array(p.length - 17);
      data.set(p.subarray(17));
      return { type, entry: { term: getU64(p, 0), index: getU64(p, 8), type: etype, data } };
    }
    case RecordType.HardState:
      if (p.length < 16) throw new Error("hard state record too short");
      return {
        type,
        hardState: { term: getU64(p, 0), commit: getU64(p, 8), vote: p.subarray(16).toString("utf8") },
      };
    case RecordType.SnapshotMarker: {
      if (p.length !== 16 && p.length !== 33) throw new Error("snapshot marker has the wrong size");
      const index = getU64(p, 0);
      const term = getU64(p, 8);
      if (p.length === 16) return { type, index, term };
      const keptAfter = { index: getU64(p, 16), term: getU64(p, 24) };
      if (keptAfter.index > index) throw new Error("snapshot marker keeps entries from past its index");
      const flags = p.readUInt8(32);
      if (flags > 1) throw new Error(`snapshot marker has unknown flags ${flags}`);
      return { type, index, term, keptAfter, replaced: flags === 1 };
    }
    default:
      throw new Error(`unknown record type ${type}`);
  }
}
