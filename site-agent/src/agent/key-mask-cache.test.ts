import assert from "node:assert/strict";
import { test } from "node:test";
import { maskFromFields } from "./flow-key.js";
import { KeyMaskCache } from "./key-mask-cache.js";

test("a cached key mask equals the one built from its fields and is shared per distinct value", () => {
  const c = new KeyMaskCache(8);
  const a = c.get(["ethDst", "ipDst", "ethType"], 24, ["inPort", "tunnelKey"]);
  assert.deepEqual(a, maskFromFields(["inPort", "tunnelKey", "ethDst", "ipDst", "ethType"], 24));
  // Same set in another order and with a duplicate: the same buffer.
  assert.equal(c.get(["tunnelKey", "ipDst", "inPort", "ethType", "ethDst", "ipDst"], 24), a);
  // Another prefix or another field set is another mask.
  const whole = c.get(["ethDst", "ipDst", "ethType"], undefined, ["inPort", "tunnelKey"]);
  assert.notEqual(whole, a);
  assert.deepEqual(whole, maskFromFields(["inPort", "tunnelKey", "ethDst", "ipDst", "ethType"]));
  // 32 and more keep the whole field, as maskFromFields does, so they share one entry.
  assert.equal(c.get(["ethDst", "ipDst", "ethType", "inPort", "tunnelKey"], 32), whole);
  assert.notEqual(c.get(["ethSrc"]), whole);
  assert.equal(c.size, 3);
  assert.throws(() => c.get(["ipDst"], 0), /ipDstBits must be a positive integer/);
});

test("the key mask cache stays within its bound", () => {
  const c = new KeyMaskCache(4);
  for (let bits = 1; bits <= 20; bits++) {
    assert.deepEqual(c.get(["ipDst"], bits), maskFromFields(["ipDst"], bits));
    assert.ok(c.size <= 4, `size ${c.size}`);
  }
  assert.throws(() => new KeyMaskCache(0), /limit must be a positive integer/);
});
