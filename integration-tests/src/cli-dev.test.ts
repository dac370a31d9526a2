// The README's run command in miniature: start `isthmus dev` as its own process on an ephemeral
// port, probe it with `isthmus health`, then SIGTERM it and expect a clean exit.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { CLI, runCli } from "./harness/cli.js";

test("isthmus dev serves health and stops cleanly on SIGTERM", async (t) => {
  const child = spawn(process.execPath, [CLI, "dev", "--listen", "127.0.0.1:0", "--ephemeral"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  const lines = createInterface({ input: child.stdout });
  let address = "";
  for await (const line of lines) {
    const rec = JSON.parse(line) as { msg: string; address?: string; health?: string };
    if (rec.health) {
      address = rec.health;
      break;
    }
  }
  assert.match(address, /^127\.0\.0\.1:\d+$/);

  // The process reports NOT_SERVING until its coordinator group has elected a leader.
  let probe = await runCli(["health", "--address", address]);
  const deadline = Date.now() + 30_000;
  while (probe.code !== 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    probe = await runCli(["health", "--address", address]);
  }
  assert.equal(probe.code, 0, `${probe.stdout}${probe.stderr}`);
  assert.match(probe.stdout, /SERVING_STATUS_SERVING/);

  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  assert.equal(await exited, 0);

  const after = await runCli(["health", "--address", address, "--timeout", "500"]);
  assert.equal(after.code, 1, "a stopped process must not report healthy");
});

test("isthmus dev names a bad --listen value", async () => {
  const r = await runCli(["dev", "--listen", "not-an-address"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /field "listen"/);
  assert.match(r.stderr, /flag --listen/);
});
