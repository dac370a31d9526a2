// `isthmus site-controller` as an operator runs it on one machine: its own embedded PostgreSQL
// from the npm package (as root: run as the postgres user), an admin token file, `isthmus site
// status` against it, then SIGTERM and a clean exit that also stops the database.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { CLI, runCli } from "./harness/cli.js";

test("isthmus site-controller with the embedded database: status, then a clean SIGTERM stop", async (t) => {
  const base = await mkdtemp(join(tmpdir(), "isthmus-site-cli-"));
  await chmod(base, 0o755); // as root the database runs as another user, which must reach its directory
  t.after(() => rm(base, { recursive: true, force: true }));
  const tokenFile = join(base, "admin.token");
  const child = spawn(
    process.execPath,
    [
      CLI,
      "site-controller",
      "--site",
      "paris",
      "--data-dir",
      join(base, "site"),
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
      "--admin-token-file",
      tokenFile,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  t.after(() => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  let address = "";
  let postgresPid = 0;
  for await (const line of createInterface({ input: child.stdout })) {
    const rec = JSON.parse(line) as { msg: string; address?: string; serverPid?: number };
    if (rec.msg === "PostgreSQL server started") postgresPid = rec.serverPid ?? 0;
    if (rec.msg === "wrote a site admin token") break;
    if (rec.msg === "site controller started") address = rec.address ?? "";
  }
  assert.match(address, /^127\.0\.0\.1:\d+$/);
  assert.ok(postgresPid > 0, "the embedded database was started");

  const st = await runCli(["site", "status", "--controller", address, "--token-file", tokenFile]);
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /site:\s+paris/);
  assert.match(st.stdout, /\(active, lease token 1\)/);
  assert.match(st.stdout, /no federation configured/);

  const bad = await runCli(["site", "status", "--controller", address, "--token-file", join(base, "nope")]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /cannot read token file/);

  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  assert.equal(await exited, 0);
  const alive = spawnSync("kill", ["-0", String(postgresPid)]).status === 0;
  assert.equal(alive, false, "the embedded PostgreSQL stopped with the controller");
});
