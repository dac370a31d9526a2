// raft-ts WAL: segment files (`<16 hex digit sequence>.wal`) and reading one back. A damaged record
// at the very end of the newest segment is a torn write and is reported as a tail to truncate;
// damage anywhere else is corruption and stops the node with the file and offset.
import { decodeRecord, RecordType, type WalRecord } from "./wal-record.js";

export const SEGMENT_SUFFIX = ".wal";

export function segmentName(seq: number): string {
  return `${seq.toString(16).padStart(16, "0")}${SEGMENT_SUFFIX}`;
}

/** The sequence number of a segment file name, or undefined for any other file. */
export function parseSegmentName(name: string): number | undefined {
  const m = /^([0-9a-f]{16})\.wal$/.exec(name);
  return m ? Number.parseInt(m[1]!, 16) : undefined;
}

export class WalCorruptionError extends Error {
  constructor(
    readonly file: string,
    readonly offset: number,
    reason: string,
  ) {
    super(
      `raft wal: corrupt record in ${file} at offset ${offset}: ${reason}; refusing to start ` +
        "(the log cannot be trusted past this point; restore this node from a peer)",
    );
    this.name = "WalCorruptionError";
  }
}

export interface ScannedRecord {
  record: WalRecord;
  offset: number;
  size: number;
}

export interface ScannedSegment {
  records: ScannedRecord[];
  /** Bytes of valid records from the start of the file. */
  validBytes: number;
  /** Set when the file ends in a torn or damaged final record that should be truncated away. */
  tail?: { offset: number; reason: string };
}

const SECTOR = 512;

/** True when some 512-byte disk sector overlapping [from, to) is all zeros within that range. */
function hasZeroSector(buf: Buffer, from: number, to: number): boolean {
  const end = Math.min(to, buf.length);
  for (let s = Math.floor(from / SECTOR) * SECTOR; s < end; s += SECTOR) {
    const lo = Math.max(s, from);
    const hi = Math.min(s + SECTOR, end);
    if (hi - lo < Math.min(SECTOR, 16)) continue; // too little of the sector to tell
    let zero = true;
    for (let i = lo; i < hi && zero; i++) if (buf[i] !== 0) zero = false;
    if (zero) return true;
  }
  return false;
}

const ZEROS = Buffer.alloc(64 * 1024);

/** True when buf[from..] is all zeros (compared natively in 64 KiB blocks: tails can be 64 MiB). */
export function allZero(buf: Buffer, from: number): boolean {
  for (let off = from; off < buf.length; off += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - off);
    if (ZEROS.compare(buf, off, off + n, 0, n) !== 0) return false;
  }
  return true;
}

/**
 * Reads every record of one segment. `isLast` marks the newest segment, the only one whose end
 * may legitimately be torn by a crash mid-write.
 */
export function scanSegment(
  file: string,
  buf: Buffer,
  seq: number,
  isLast: boolean,
  maxRecordBytes: number,
): ScannedSegment {
  const records: ScannedRecord[] = [];
  let off = 0;
  while (off < buf.length) {
    const r = decodeRecord(buf, off, maxRecordBytes);
    if (!r.ok) {
      // A crash can leave a partial record, zeros where the file grew, or a final record whose
      // sectors did not all reach the disk. Anything followed by more data is real corruption.
      // In a preallocated segment the unused remainder is zeros, so "nothing but zeros after the
      // damaged record" marks the end of what was written.
      const declaredEnd = buf.length - off >= 9 ? off + 9 + buf.readUInt32LE(off) : buf.length;
      // Pages written after the last fsync may reach the disk out of order, leaving a whole
      // unwritten (zero) sector inside the damaged record: also a torn write, and nothing after
      // it was ever acknowledged as durable.
      const isTail =
        r.torn || allZero(buf, Math.min(declaredEnd, buf.length)) || hasZeroSector(buf, off, declaredEnd);
      if (isLast && isTail) return { records, validBytes: off, tail: { offset: off, reason: r.reason } };
      throw new WalCorruptionError(file, off, r.reason);
    }
    if (records.length === 0) {
      if (r.record.type !== RecordType.SegmentHeader) {
        throw new WalCorruptionError(file, off, "segment does not start with a header record");
      }
      if (r.record.seq !== seq) {
        throw new WalCorruptionError(
          file,
          off,
          `segment header names sequence ${r.record.seq}, file name ${seq}`,
        );
      }
    }
    records.push({ record: r.record, offset: off, size: r.size });
    off += r.size;
  }
  return { records, validBytes: off };
}
