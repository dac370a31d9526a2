import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { nativeAddon } from "./native-addon.js";

test("an addon that is not built is not available, and loading it names what needed it and how to build it", () => {
  const missing = nativeAddon<object>("isthmus_no_such_addon.node", "the frobnicator");
  assert.equal(missing.available(), false);
  assert.throws(
    () => missing.load(),
    /the frobnicator needs the native addon at .*isthmus_no_such_addon\.node; build it with `npm run build`/,
  );
});

test("a built addon is found where the build puts it and loaded once", (t) => {
  const afpacket = nativeAddon<{ open: unknown }>("isthmus_afpacket.node", "AF_PACKET ports");
  assert.match(afpacket.path, /site-agent\/native\/build\/Release\/isthmus_afpacket\.node$/);
  if (!existsSync(afpacket.path)) {
    if (process.env.CI) assert.fail(`the native addons are built in CI (${afpacket.path} is missing)`);
    return t.skip("native addons not built (npm run build)");
  }
  assert.equal(afpacket.available(), process.platform === "linux");
  const first = afpacket.load();
  assert.equal(typeof first.open, "function");
  assert.equal(afpacket.load(), first, "loaded once");
});
