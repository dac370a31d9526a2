import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { silentLogger } from "./logger.js";
import { chooseScavenger, PARALLEL_SCAVENGE_ENV, scavengerChoice } from "./scavenger.js";

test("scavenger: single-threaded by default; node flags, then the environment, decide otherwise", () => {
  assert.equal(scavengerChoice([], {}).parallel, false);
  assert.equal(scavengerChoice([], { [PARALLEL_SCAVENGE_ENV]: "1" }).parallel, true);
  assert.equal(scavengerChoice([], { [PARALLEL_SCAVENGE_ENV]: "0" }).parallel, false);
  assert.equal(scavengerChoice(["--parallel-scavenge"], { [PARALLEL_SCAVENGE_ENV]: "0" }).parallel, true);
  assert.equal(scavengerChoice(["--no-parallel-scavenge"], { [PARALLEL_SCAVENGE_ENV]: "1" }).parallel, false);
  assert.equal(
    scavengerChoice([], { NODE_OPTIONS: "--max-old-space-size=4096 --parallel_scavenge" }).parallel,
    true,
  );
  // The last of several flags wins, as in node.
  assert.equal(scavengerChoice(["--no-parallel-scavenge", "--parallel-scavenge"], {}).parallel, true);
  assert.throws(
    () => scavengerChoice([], { [PARALLEL_SCAVENGE_ENV]: "yes" }),
    /ISTHMUS_PARALLEL_SCAVENGE must be 0 or 1/,
  );
});

test("scavenger: chooseScavenger sets V8's flag only when single-threaded", () => {
  const set: string[] = [];
  assert.equal(chooseScavenger(silentLogger(), [], {}, (f) => set.push(f)).parallel, false);
  assert.deepEqual(set, ["--no-parallel-scavenge"]);
  chooseScavenger(silentLogger(), [], { [PARALLEL_SCAVENGE_ENV]: "1" }, (f) => set.push(f));
  assert.deepEqual(set, ["--no-parallel-scavenge"]);
});

test("scavenger: V8 accepts the flag chooseScavenger sets (an unknown flag prints an error)", () => {
  // The check can fail: a misspelt flag makes V8 print "Error: unrecognized flag" and go on.
  const misspelt = spawnSync(
    process.execPath,
    ["-e", 'require("node:v8").setFlagsFromString("--no-parallel-scavange")'],
    { encoding: "utf8" },
  );
  assert.match(misspelt.stdout + misspelt.stderr, /unrecognized flag/);
  const module = new URL("./scavenger.js", import.meta.url).href;
  const r = spawnSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { chooseScavenger } from ${JSON.stringify(module)};
       const log = { info() {} };
       process.stdout.write(String(chooseScavenger(log, [], {}).parallel));`,
    ],
    { encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, "false");
  assert.doesNotMatch(r.stdout + r.stderr, /unrecognized flag/);
});
