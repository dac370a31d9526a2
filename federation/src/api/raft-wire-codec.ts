// isthmus.v1.RaftMessageBatch straight between raft-ts messages and protobuf bytes, for the gRPC
// transport's serializer: the same wire format as the generated code, without its intermediate
// objects, its BinaryWriter and its bigint round trip for every uint64 (each write crosses the
// transport twice on its critical path). raft-wire-codec.test.ts checks both directions against
// the generated encoder and decoder.
import {
  type Entry,
  EntryType,
  type Message,
  MessageType,
  newMessage,
  type SnapshotMetadata,
} from "../raft/index.js";
import { RaftWireError } from "./raft-wire.js";

const EMPTY = Buffer.alloc(0);
const TWO_POW_32 = 0x1_0000_0000;

const MESSAGE_TYPES = new Set<number>(
  Object.values(MessageType).filter((v): v is number => typeof v === "number"),
);

function varintSize(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x20_0000) return 3;
  if (v < 0x1000_0000) return 4;
  let n = 4;
  v = Math.floor(v / 0x1000_0000);
  while (v > 0) {
    n++;
    v = Math.floor(v / 0x80);
  }
  return n;
}

function lenFieldSize(len: number): number {
  return 1 + varintSize(len) + len;
}

function scalarSize(v: number): number {
  return v === 0 ? 0 : 1 + varintSize(v);
}

function stringsSize(list: readonly string[]): number {
  let n = 0;
  for (const s of list) n += lenFieldSize(Buffer.byteLength(s));
  return n;
}

function entrySize(e: Entry): number {
  return scalarSize(e.term) + scalarSize(e.index) + scalarSize(e.type) + bytesSize(e.data);
}

function bytesSize(b: Uint8Array | undefined): number {
  return b && b.byteLength > 0 ? lenFieldSize(b.byteLength) : 0;
}

function stringSize(s: string): number {
  return s === "" ? 0 : lenFieldSize(Buffer.byteLength(s));
}

function confStateSize(m: SnapshotMetadata): number {
  const cs = m.confState;
  return stringsSize(cs.voters) + stringsSize(cs.learners) + stringsSize(cs.votersOutgoing);
}

function snapshotMetaSize(m: SnapshotMetadata): number {
  return scalarSize(m.index) + scalarSize(m.term) + lenFieldSize(confStateSize(m));
}

/** Encoded size of one RaftMessage (without its own tag and length). */
function messageSize(m: Message, entrySizes: number[]): number {
  let n =
    scalarSize(m.type) +
    stringSize(m.from) +
    stringSize(m.to) +
    scalarSize(m.term) +
    scalarSize(m.logTerm) +
    scalarSize(m.index) +
    scalarSize(m.commit) +
    (m.reject ? 2 : 0) +
    scalarSize(m.rejectHint) +
    bytesSize(m.context) +
    bytesSize(m.snapshotChunk) +
    scalarSize(m.snapshotOffset ?? 0) +
    (m.snapshotDone ? 2 : 0);
  for (const e of m.entries) {
    const s = entrySize(e);
    entrySizes.push(s);
    n += lenFieldSize(s);
  }
  if (m.snapshot) n += lenFieldSize(snapshotMetaSize(m.snapshot));
  return n;
}

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(v: number): void {
    const buf = this.buf;
    while (v >= TWO_POW_32) {
      buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    let x = v >>> 0;
    while (x >= 0x80) {
      buf[this.pos++] = (x & 0x7f) | 0x80;
      x >>>= 7;
    }
    buf[this.pos++] = x;
  }

  scalar(tag: number, v: number): void {
    if (v === 0) return;
    this.buf[this.pos++] = tag;
    this.varint(v);
  }

  bool(tag: number, v: boolean | undefined): void {
    if (!v) return;
    this.buf[this.pos++] = tag;
    this.buf[this.pos++] = 1;
  }

  bytes(tag: number, b: Uint8Array | undefined): void {
    if (!b || b.byteLength === 0) return;
    this.buf[this.pos++] = tag;
    this.varint(b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }

  string(tag: number, s: string): void {
    if (s === "") return;
    this.buf[this.pos++] = tag;
    const len = Buffer.byteLength(s);
    this.varint(len);
    this.pos += this.buf.write(s, this.pos, len, "utf8");
  }

  strings(tag: number, list: readonly string[]): void {
    for (const s of list) {
      this.buf[this.pos++] = tag;
      const len = Buffer.byteLength(s);
      this.varint(len);
      this.pos += this.buf.write(s, this.pos, len, "utf8");
    }
  }
}

/** Encodes messages as one isthmus.v1.RaftMessageBatch. */
export function encodeRaftBatch(messages: readonly Message[]): Buffer {
  const sizes: number[] = [];
  const entrySizes: number[] = [];
  let total = 0;
  for (const m of messages) {
    const s = messageSize(m, entrySizes);
    sizes.push(s);
    total += lenFieldSize(s);
  }
  const w = new Writer(Buffer.allocUnsafe(total));
  let k = 0;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    w.buf[w.pos++] = 0x0a; // RaftMessageBatch.messages = 1
    w.varint(sizes[i]!);
    w.scalar(0x08, m.type);
    w.string(0x12, m.from);
    w.string(0x1a, m.to);
    w.scalar(0x20, m.term);
    w.scalar(0x28, m.logTerm);
    w.scalar(0x30, m.index);
    for (const e of m.entries) {
      w.buf[w.pos++] = 0x3a;
      w.varint(entrySizes[k++]!);
      w.scalar(0x08, e.term);
      w.scalar(0x10, e.index);
      w.scalar(0x18, e.type);
      w.bytes(0x22, e.data);
    }
    w.scalar(0x40, m.commit);
    w.bool(0x48, m.reject);
    w.scalar(0x50, m.rejectHint);
    w.bytes(0x5a, m.context);
    if (m.snapshot) {
      const meta = m.snapshot;
      w.buf[w.pos++] = 0x62;
      w.varint(snapshotMetaSize(meta));
      w.scalar(0x08, meta.index);
      w.scalar(0x10, meta.term);
      w.buf[w.pos++] = 0x1a;
      w.varint(confStateSize(meta));
      w.strings(0x0a, meta.confState.voters);
      w.strings(0x12, meta.confState.learners);
      w.strings(0x1a, meta.confState.votersOutgoing);
    }
    w.bytes(0x6a, m.snapshotChunk);
    w.scalar(0x70, m.snapshotOffset ?? 0);
    w.bool(0x78, m.snapshotDone);
  }
  if (w.pos !== total) throw new Error(`raft wire: encoded ${w.pos} bytes, sized ${total}`);
  return w.buf;
}

/** Reads protobuf fields from buf[pos, end); structural errors name `where`. */
class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly end: number,
    readonly where: string,
  ) {}

  done(): boolean {
    return this.pos >= this.end;
  }

  /** A varint as a number; values above 2^53 - 1 are refused (raft's counters never get there). */
  varint(field: string): number {
    const buf = this.buf;
    let lo = 0;
    let shift = 0;
    // The low 28 bits with bit operations, the rest with multiplication (no int32 overflow).
    while (shift < 28) {
      if (this.pos >= this.end) throw new RaftWireError(this.where, "truncated varint");
      const b = buf[this.pos++]!;
      lo |= (b & 0x7f) << shift;
      if (b < 0x80) return lo;
      shift += 7;
    }
    let v = lo;
    let scale = 0x1000_0000;
    for (let i = 0; i < 6; i++) {
      if (this.pos >= this.end) throw new RaftWireError(this.where, "truncated varint");
      const b = buf[this.pos++]!;
      v += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (v > Number.MAX_SAFE_INTEGER) throw new RaftWireError(field, "value above 2^53 - 1");
        return v;
      }
      scale *= 0x80;
    }
    throw new RaftWireError(this.where, "varint longer than 10 bytes");
  }

  /** The [start, end) of a length-delimited field's payload, advancing past it. */
  span(field: string): [number, number] {
    const len = this.varint(field);
    const start = this.pos;
    if (len > this.end - start) throw new RaftWireError(field, "length past the end of the message");
    this.pos = start + len;
    return [start, start + len];
  }

  string(field: string): string {
    const [s, e] = this.span(field);
    return this.buf.toString("utf8", s, e);
  }

  /** A copy: entries outlive the received frame (WAL cache, state machine), which must not be pinned. */
  bytes(field: string): Buffer {
    const [s, e] = this.span(field);
    if (s === e) return EMPTY;
    const out = Buffer.allocUnsafe(e - s);
    this.buf.copy(out, 0, s, e);
    return out;
  }

  /** Skips an unknown field (proto3 readers ignore fields they do not know). */
  skip(tag: number, field: string): void {
    if (tag >>> 3 === 0) throw new RaftWireError(field, "field number 0");
    switch (tag & 7) {
      case 0:
        this.varint(field);
        return;
      case 1:
        this.advance(8, field);
        return;
      case 2:
        this.span(field);
        return;
      case 5:
        this.advance(4, field);
        return;
      default:
        throw new RaftWireError(field, `unsupported wire type ${tag & 7}`);
    }
  }

  private advance(n: number, field: string): void {
    if (n > this.end - this.pos) throw new RaftWireError(field, "truncated");
    this.pos += n;
  }
}

function decodeEntry(r: Reader, k: number): Entry {
  const [start, end] = r.span(`entries[${k}]`);
  const e = new Reader(r.buf, start, end, `entries[${k}]`);
  let term = 0;
  let index = 0;
  let type = 0;
  let data: Buffer = EMPTY;
  while (!e.done()) {
    const tag = e.varint(`entries[${k}]`);
    switch (tag) {
      case 0x08:
        term = e.varint(`entries[${k}].term`);
        break;
      case 0x10:
        index = e.varint(`entries[${k}].index`);
        break;
      case 0x18:
        type = e.varint(`entries[${k}].type`);
        break;
      case 0x22:
        data = e.bytes(`entries[${k}].data`);
        break;
      default:
        e.skip(tag, `entries[${k}]`);
    }
  }
  if (type !== EntryType.Normal && type !== EntryType.ConfChange) {
    throw new RaftWireError(`entries[${k}].type`, `unknown entry type ${type}`);
  }
  return { term, index, type: type as EntryType, data };
}

function decodeStrings(r: Reader, into: string[], field: string): void {
  into.push(r.string(field));
}

function decodeSnapshotMeta(r: Reader): SnapshotMetadata {
  const [start, end] = r.span("snapshot");
  const s = new Reader(r.buf, start, end, "snapshot");
  const meta: SnapshotMetadata = {
    index: 0,
    term: 0,
    confState: { voters: [], learners: [], votersOutgoing: [] },
  };
  while (!s.done()) {
    const tag = s.varint("snapshot");
    if (tag === 0x08) meta.index = s.varint("snapshot.index");
    else if (tag === 0x10) meta.term = s.varint("snapshot.term");
    else if (tag === 0x1a) {
      // A repeated message field seen twice replaces the first, as the generated decoder does.
      const cs = { voters: [] as string[], learners: [] as string[], votersOutgoing: [] as string[] };
      const [cstart, cend] = s.span("snapshot.conf_state");
      const c = new Reader(s.buf, cstart, cend, "snapshot.conf_state");
      while (!c.done()) {
        const t = c.varint("snapshot.conf_state");
        if (t === 0x0a) decodeStrings(c, cs.voters, "snapshot.conf_state.voters");
        else if (t === 0x12) decodeStrings(c, cs.learners, "snapshot.conf_state.learners");
        else if (t === 0x1a) decodeStrings(c, cs.votersOutgoing, "snapshot.conf_state.voters_outgoing");
        else c.skip(t, "snapshot.conf_state");
      }
      meta.confState = cs;
    } else s.skip(tag, "snapshot");
  }
  return meta;
}

/** Decodes one RaftMessage from buf[start, end), checking it as fromWire does. */
function decodeMessage(buf: Buffer, start: number, end: number): Message {
  const r = new Reader(buf, start, end, "message");
  const m: Message = newMessage({ type: 0 as MessageType, from: "", to: "" });
  let snapshot: SnapshotMetadata | undefined;
  let snapshotChunk: Buffer = EMPTY;
  let snapshotOffset = 0;
  let snapshotDone = false;
  while (!r.done()) {
    const tag = r.varint("message");
    switch (tag) {
      case 0x08:
        m.type = r.varint("type") as MessageType;
        break;
      case 0x12:
        m.from = r.string("from");
        break;
      case 0x1a:
        m.to = r.string("to");
        break;
      case 0x20:
        m.term = r.varint("term");
        break;
      case 0x28:
        m.logTerm = r.varint("log_term");
        break;
      case 0x30:
        m.index = r.varint("index");
        break;
      case 0x3a:
        m.entries.push(decodeEntry(r, m.entries.length));
        break;
      case 0x40:
        m.commit = r.varint("commit");
        break;
      case 0x48:
        m.reject = r.varint("reject") !== 0;
        break;
      case 0x50:
        m.rejectHint = r.varint("reject_hint");
        break;
      case 0x5a:
        m.context = r.bytes("context");
        break;
      case 0x62:
        snapshot = decodeSnapshotMeta(r);
        break;
      case 0x6a:
        snapshotChunk = r.bytes("snapshot_chunk");
        break;
      case 0x70:
        snapshotOffset = r.varint("snapshot_offset");
        break;
      case 0x78:
        snapshotDone = r.varint("snapshot_done") !== 0;
        break;
      default:
        r.skip(tag, "message");
    }
  }
  if (!MESSAGE_TYPES.has(m.type)) throw new RaftWireError("type", `unknown message type ${m.type}`);
  if (m.from === "") throw new RaftWireError("from", "must not be empty");
  if (m.to === "") throw new RaftWireError("to", "must not be empty");
  if (snapshot) {
    m.snapshot = snapshot;
    m.snapshotChunk = snapshotChunk;
    m.snapshotOffset = snapshotOffset;
    m.snapshotDone = snapshotDone;
  } else if (m.type === MessageType.Snapshot) {
    throw new RaftWireError("snapshot", "a snapshot message must carry snapshot metadata");
  }
  return m;
}

/**
 * Decodes an isthmus.v1.RaftMessageBatch. Each message is checked on its own: a malformed one
 * comes back as its RaftWireError (the transport drops and counts it) without losing the others.
 * Throws only when the batch itself cannot be framed.
 */
export function decodeRaftBatch(buf: Buffer): Array<Message | RaftWireError> {
  const r = new Reader(buf, 0, buf.length, "batch");
  const out: Array<Message | RaftWireError> = [];
  while (!r.done()) {
    const tag = r.varint("batch");
    if (tag !== 0x0a) {
      r.skip(tag, "batch");
      continue;
    }
    const [start, end] = r.span("messages");
    try {
      out.push(decodeMessage(buf, start, end));
    } catch (err) {
      if (!(err instanceof RaftWireError)) throw err;
      out.push(err);
    }
  }
  return out;
}
