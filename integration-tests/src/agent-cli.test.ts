// `isthmus agent` stopped by an operator before it has started: SIGTERM while it still waits for
// its site controller is a clean stop (it had bound its datapath already), not a death by signal.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { CLI } from "./harness/cli.js";

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test("SIGTERM while the agent waits for its controller stops it cleanly, with what it set up", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "isthmus-agent-cli-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const adminToken = join(dir, "admin.token");
  await writeFile(adminToken, "not-a-real-token\n");
  const child = spawn(
    process.execPath,
    [
      CLI,
      "agent",
      "--name",
      "early-stop",
      "--admin-token-file",
      adminToken,
      "--controller",
      `127.0.0.1:${await closedPort()}`,
      "--tunnel-ip",
      "127.0.0.1",
      "--tunnel-port",
      "0",
      "--datapath",
      "userspace",
      "--metrics-listen",
      "127.0.0.1:0",
      "--admin-listen",
      "127.0.0.1:0",
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.on("exit", (code, signal) => resolve([code, signal])),
  );
  const msgs: string[] = [];
  let signalled = false;
  for await (const line of createInterface({ input: child.stdout! })) {
    const rec = JSON.parse(line) as { msg: string };
    msgs.push(rec.msg);
    if (!signalled && rec.msg === "registration failed; retrying") {
      signalled = true;
      child.kill("SIGTERM");
    }
  }
  const [code, signal] = await exited;
  assert.ok(signalled, `the agent never tried to register: ${msgs.join(" | ")}`);
  assert.deepEqual([code, signal], [0, null], msgs.join(" | "));
  assert.ok(msgs.includes("shutting down"), msgs.join(" | "));
  assert.ok(msgs.includes("stopped"), msgs.join(" | "));
  assert.ok(!msgs.includes("agent started"), "it never started");
});
