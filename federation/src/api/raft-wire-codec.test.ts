import assert from "node:assert/strict";
import { test } from "node:test";
import { raftpb } from "@isthmus/schema";
import fc from "fast-check";
import { EntryType, type Message, MessageType } from "../raft/index.js";
import { fromWire, RaftWireError, toWire } from "./raft-wire.js";
import { decodeRaftBatch, encodeRaftBatch } from "./raft-wire-codec.js";

const bytes = (max: number) => fc.uint8Array({ maxLength: max });
// Counters up to 2^53 - 1 (raft-ts's numbers), weighted towards the small values seen in practice.
const counter = fc.oneof(fc.nat(300), fc.nat(), fc.maxSafeNat());
const id = fc.string({ unit: "grapheme", minLength: 1, maxLength: 6 });
const ids = fc.array(fc.string({ maxLength: 4 }), { maxLength: 3 });

const message: fc.Arbitrary<Message> = fc
  .record({
    type: fc.constantFrom(
      ...Object.values(MessageType).filter((v): v is MessageType => typeof v === "number"),
    ),
    from: id,
    to: id,
    term: counter,
    logTerm: counter,
    index: counter,
    entries: fc.array(
      fc.record({
        term: counter,
        index: counter,
        type: fc.constantFrom(EntryType.Normal, EntryType.ConfChange),
        data: bytes(300),
      }),
      { maxLength: 4 },
    ),
    commit: counter,
    reject: fc.boolean(),
    rejectHint: counter,
    context: bytes(16),
    snap: fc.option(
      fc.record({
        meta: fc.record({
          index: counter,
          term: counter,
          confState: fc.record({ voters: ids, learners: ids, votersOutgoing: ids }),
        }),
        chunk: bytes(64),
        offset: counter,
        done: fc.boolean(),
      }),
    ),
  })
  .map(({ snap, ...m }) => {
    const out: Message = { ...m };
    if (m.type === MessageType.Snapshot || snap) {
      const s = snap ?? {
        meta: { index: 0, term: 0, confState: { voters: [], learners: [], votersOutgoing: [] } },
        chunk: new Uint8Array(),
        offset: 0,
        done: false,
      };
      out.snapshot = s.meta;
      out.snapshotChunk = s.chunk;
      out.snapshotOffset = s.offset;
      out.snapshotDone = s.done;
    }
    return out;
  });

/** Plain arrays for bytes, so messages from either decoder compare by content. */
function plain(m: Message): unknown {
  return {
    ...m,
    context: [...m.context],
    entries: m.entries.map((e) => ({ ...e, data: [...e.data] })),
    ...(m.snapshotChunk ? { snapshotChunk: [...m.snapshotChunk] } : {}),
    ...(m.snapshot
      ? {
          snapshot: {
            index: m.snapshot.index,
            term: m.snapshot.term,
            confState: {
              voters: [...m.snapshot.confState.voters],
              learners: [...m.snapshot.confState.learners],
              votersOutgoing: [...m.snapshot.confState.votersOutgoing],
            },
          },
        }
      : {}),
  };
}

function generated(messages: Message[]): Buffer {
  return Buffer.from(raftpb.RaftMessageBatch.encode({ messages: messages.map(toWire) }).finish());
}

test("the direct codec writes the generated encoder's bytes and reads them back as fromWire does", () => {
  fc.assert(
    fc.property(fc.array(message, { maxLength: 5 }), (messages) => {
      const ours = encodeRaftBatch(messages);
      const theirs = generated(messages);
      assert.deepEqual(ours, theirs);
      const viaGenerated = raftpb.RaftMessageBatch.decode(ours).messages.map(fromWire);
      const decoded = decodeRaftBatch(theirs);
      assert.deepEqual(
        decoded.map((m) => plain(m as Message)),
        viaGenerated.map(plain),
      );
      assert.deepEqual(
        decoded.map((m) => plain(m as Message)),
        messages.map(plain),
      );
    }),
    { numRuns: 300 },
  );
});

test("the direct codec refuses a malformed message by name and keeps the rest of the batch", () => {
  const good: Message = {
    type: MessageType.Append,
    from: "a",
    to: "b",
    term: 2,
    logTerm: 1,
    index: 4,
    entries: [{ term: 2, index: 5, type: EntryType.Normal, data: Buffer.from("x") }],
    commit: 4,
    reject: false,
    rejectHint: 0,
    context: new Uint8Array(),
  };
  const cases: Array<[raftpb.RaftMessage, RegExp]> = [
    [{ ...toWire(good), type: 99 as raftpb.RaftMessageType }, /field type: unknown message type 99/],
    [{ ...toWire(good), from: "" }, /field from/],
    [{ ...toWire(good), to: "" }, /field to/],
    [
      { ...toWire(good), entries: [{ term: 1, index: 1, type: 0, data: Buffer.alloc(0) }] },
      /field entries\[0\]\.type/,
    ],
    [{ ...toWire(good), type: raftpb.RaftMessageType.RAFT_MESSAGE_TYPE_SNAPSHOT }, /field snapshot/],
  ];
  for (const [bad, re] of cases) {
    const batch = Buffer.from(
      raftpb.RaftMessageBatch.encode({ messages: [toWire(good), bad, toWire(good)] }).finish(),
    );
    const out = decodeRaftBatch(batch);
    assert.equal(out.length, 3);
    assert.ok(out[1] instanceof RaftWireError);
    assert.match((out[1] as RaftWireError).message, re);
    assert.equal((out[0] as Message).index, 4);
    assert.equal((out[2] as Message).entries[0]!.index, 5);
  }
  // A counter beyond 2^53 - 1 (a 10-byte varint) is refused, not rounded.
  const big = Buffer.concat([
    Buffer.from([0x20]),
    Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
  ]);
  const framed = Buffer.concat([Buffer.from([0x0a, big.length]), big]);
  assert.match((decodeRaftBatch(framed)[0] as Error).message, /field term: value above/);
  // A message whose length runs past the batch cannot be framed: the whole batch is refused.
  assert.throws(() => decodeRaftBatch(Buffer.from([0x0a, 0x05, 0x08])), /length past the end/);
  // Unknown fields (a newer peer's additions) are skipped.
  const withUnknown = Buffer.concat([generated([good]), Buffer.from([0x10, 0x07])]);
  const unknownInside = Buffer.from(raftpb.RaftMessage.encode(toWire(good)).finish());
  const extended = Buffer.concat([unknownInside, Buffer.from([0xa0, 0x01, 0x05, 0xaa, 0x01, 0x01, 0x00])]);
  const batch2 = Buffer.concat([withUnknown, Buffer.from([0x0a, extended.length]), extended]);
  const out2 = decodeRaftBatch(batch2);
  assert.equal(out2.length, 2);
  assert.deepEqual(plain(out2[1] as Message), plain(good));
});

test("decoded bytes are copies that do not pin or alias the received frame", () => {
  const m: Message = {
    type: MessageType.Append,
    from: "a",
    to: "b",
    term: 1,
    logTerm: 1,
    index: 1,
    entries: [{ term: 1, index: 2, type: EntryType.Normal, data: Buffer.from("payload") }],
    commit: 1,
    reject: false,
    rejectHint: 0,
    context: Buffer.from("ctx"),
  };
  const frame = encodeRaftBatch([m]);
  const got = decodeRaftBatch(frame)[0] as Message;
  frame.fill(0);
  assert.equal(Buffer.from(got.entries[0]!.data).toString(), "payload");
  assert.equal(Buffer.from(got.context).toString(), "ctx");
});
