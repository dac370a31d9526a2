import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ChangeJournal } from "./journal.js";

const change = (index: number) => ({ index, upserts: [], deletes: [] });

describe("change journal", () => {
  it("replays changes after a position and stays within its bound", () => {
    const j = new ChangeJournal(3);
    for (const i of [2, 5, 6]) j.append(change(i));
    assert.deepEqual(
      j.since(2).map((c) => c.index),
      [5, 6],
    );
    assert.ok(j.covers(0));
    for (const i of [8, 9, 12]) j.append(change(i));
    assert.equal(j.size, 3);
    assert.equal(j.floor, 6);
    assert.equal(j.covers(5), false);
    assert.ok(j.covers(6));
    assert.deepEqual(
      j.since(6).map((c) => c.index),
      [8, 9, 12],
    );
    assert.deepEqual(j.since(12), []);
    assert.throws(() => j.append(change(12)), /invariant/);
    j.reset(20);
    assert.equal(j.size, 0);
    assert.equal(j.covers(19), false);
    assert.throws(() => new ChangeJournal(0));
  });
});
