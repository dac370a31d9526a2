// `npm run sim` end to end: the summary line, the exit status, and a replayed seed's trace.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const cli = fileURLToPath(new URL("./cli.js", import.meta.url));

test("sim --seeds prints one summary line and exits 0", () => {
  const r = spawnSync(process.execPath, [cli, "--seeds", "3", "--duration", "1500"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^raft sim: seeds=3 operations=\d+ faults=\d+ violations=0 \(/);
});

test("sim --seed replays one seed with a trace", () => {
  const r = spawnSync(process.execPath, [cli, "--seed", "7", "--duration", "1500"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /seed 7: electionTicks=/);
  assert.match(r.stdout, /became leader at term/);
  assert.match(r.stdout, /seed 7: operations=\d+ .* violations=0/);
});

test("sim rejects a bad flag value with a clear error", () => {
  const r = spawnSync(process.execPath, [cli, "--seeds", "many"], { encoding: "utf8" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /expected a non-negative integer, got "many"/);
});
