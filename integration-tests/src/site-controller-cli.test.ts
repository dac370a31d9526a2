// `isthmus site-controller` as an operator runs it on one machine: its own embedded PostgreSQL
// from the npm package (as root: run as the postgres user), an admin token file, `isthmus site
// status` against it, then SIGTERM and a clean exit that also stops the database; and a
// controller killed with SIGKILL, whose database is left running, starts again on its data.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmod, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { credentials, Metadata } from "@grpc/grpc-js";
import { sitepb, topologypb } from "@isthmus/schema";
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
  assert.match(st.stdout, /hosts \/ ports:\s+0 \(0 alive\) \/ 0/);

  const bad = await runCli(["site", "status", "--controller", address, "--token-file", join(base, "nope")]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /cannot read token file/);

  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill("SIGTERM");
  assert.equal(await exited, 0);
  const alive = spawnSync("kill", ["-0", String(postgresPid)]).status === 0;
  assert.equal(alive, false, "the embedded PostgreSQL stopped with the controller");
});

/** Starts `isthmus site-controller` on `dataDir`; resolves once it serves, with its log so far. */
async function startController(base: string) {
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
      join(base, "admin.token"),
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const messages: string[] = [];
  let address = "";
  let postgresPid = 0;
  // The controller itself: the process started re-executes node with its flags (memory-reducer.ts).
  let controllerPid = 0;
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const rec = JSON.parse(line) as { msg: string; address?: string; serverPid?: number; pid: number };
    messages.push(rec.msg);
    controllerPid = rec.pid;
    if (rec.msg === "PostgreSQL server started") postgresPid = rec.serverPid ?? 0;
    if (rec.msg === "site controller started") {
      address = rec.address ?? "";
      break;
    }
  }
  // Keep draining its log so a full pipe never stalls it.
  child.stdout.resume();
  assert.match(address, /^127\.0\.0\.1:\d+$/, `controller did not start: ${messages.join(" | ")}`);
  return { child, address, postgresPid, controllerPid, messages };
}

function call<Req, Res>(
  fn: (req: Req, md: Metadata, cb: (err: Error | null, res: Res) => void) => unknown,
  req: Req,
  md: Metadata,
): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, md, (err, res) => (err ? reject(err) : resolve(res))));
}

/** Running and not a zombie (an orphaned server is reaped by whoever adopted it, maybe late). */
function running(pid: number): boolean {
  if (spawnSync("kill", ["-0", String(pid)]).status !== 0) return false;
  const stat = spawnSync("cat", [`/proc/${pid}/stat`], { encoding: "utf8" }).stdout ?? "";
  return !/\) Z /.test(stat);
}

test("a controller killed with SIGKILL leaves its embedded database running; the next start stops it and keeps the data", async (t) => {
  const base = await mkdtemp(join(tmpdir(), "isthmus-site-kill-"));
  await chmod(base, 0o755);
  const pids: number[] = [];
  t.after(async () => {
    for (const pid of pids) if (running(pid)) process.kill(pid, "SIGKILL");
    await rm(base, { recursive: true, force: true });
  });
  const first = await startController(base);
  pids.push(first.child.pid!, first.controllerPid, first.postgresPid);
  // Wait for the admin token the first life writes after starting.
  let token = "";
  for (const end = Date.now() + 15_000; token === "" && Date.now() < end; ) {
    token = await readFile(join(base, "admin.token"), "utf8").then(
      (s) => s.trim(),
      () => "",
    );
    if (token === "") await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(token, "admin token written");
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  const api1 = new sitepb.SiteServiceClient(first.address, credentials.createInsecure());
  const reg = await call<sitepb.RegisterHostRequest, sitepb.RegisterHostResponse>(
    api1.registerHost.bind(api1),
    {
      name: "h1",
      tunnelIp: "192.0.2.1",
      tunnelPort: 0,
      role: topologypb.HostRole.HOST_ROLE_HOST,
      wanIp: "",
      wanPort: 0,
    },
    md,
  );
  api1.close();

  // The controller process dies outright (the one started only relays its exit status).
  const exited = new Promise((resolve) => first.child.once("exit", resolve));
  process.kill(first.controllerPid, "SIGKILL");
  await exited;
  assert.equal(running(first.postgresPid), true, "the database outlived its controller");

  const second = await startController(base);
  pids.push(second.child.pid!, second.controllerPid, second.postgresPid);
  assert.ok(
    second.messages.includes("a PostgreSQL server left running on this data directory; stopping it"),
    `the left-running server was noticed: ${second.messages.join(" | ")}`,
  );
  assert.equal(running(first.postgresPid), false, "the left-running server was stopped");
  assert.notEqual(second.postgresPid, first.postgresPid);
  const api2 = new sitepb.SiteServiceClient(second.address, credentials.createInsecure());
  t.after(() => api2.close());
  const hosts = await call<sitepb.ListHostsRequest, sitepb.ListHostsResponse>(
    api2.listHosts.bind(api2),
    {},
    md,
  );
  assert.deepEqual(
    hosts.hosts.map((h) => [h.id, h.name]),
    [[reg.host!.id, "h1"]],
    "the data of the first life is there",
  );

  const stopped = new Promise<number | null>((resolve) => second.child.once("exit", (code) => resolve(code)));
  second.child.kill("SIGTERM");
  assert.equal(await stopped, 0);
  assert.equal(running(second.postgresPid), false);
});
