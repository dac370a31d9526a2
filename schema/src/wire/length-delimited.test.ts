import assert from "node:assert/strict";
import { test } from "node:test";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { fieldSize, varintLength, writeField } from "./length-delimited.js";

test("varintLength counts 7 bits a byte", () => {
  assert.deepEqual(
    [0, 127, 128, 16_383, 16_384, 2 ** 21, 2 ** 32 - 1].map(varintLength),
    [1, 1, 2, 2, 3, 4, 5],
  );
});

test("writeField writes what a protobuf reader reads back, at the size fieldSize says", () => {
  const bodies = [new Uint8Array(0), new Uint8Array(5).fill(7), new Uint8Array(300).fill(9)];
  const out = new Uint8Array(bodies.reduce((s, b) => s + fieldSize(b), 0));
  let at = 0;
  for (const b of bodies) at = writeField(out, at, (2 << 3) | 2, b);
  assert.equal(at, out.length);
  const r = new BinaryReader(out);
  for (const b of bodies) {
    assert.equal(r.uint32(), (2 << 3) | 2);
    assert.deepEqual(r.bytes(), b);
  }
  assert.equal(r.pos, out.length);
});
