// `isthmus coordinator` as an operator runs it: one node process on loopback with a key directory
// from `isthmus bootstrap`, driven by the admin CLI with a real admin token; SIGTERM stops it
// cleanly and a restart on the same data directory still holds the intent (raft WAL).
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { type TestContext, test } from "node:test";
import { fileURLToPath } from "node:url";
import { credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { auth, pidAlive } from "@isthmus/federation";
import { federationpb, healthpb, MEMORY_REDUCER_ENV } from "@isthmus/schema";
import { CLI, runCli } from "./harness/cli.js";
import { fixedPort } from "./harness/ports.js";

const SAMPLE = fileURLToPath(new URL("../../docs/examples/two-site-web.yaml", import.meta.url));

function startNode(args: string[]): ChildProcess {
  return spawn(process.execPath, [CLI, "coordinator", ...args], { stdio: ["ignore", "ignore", "inherit"] });
}

/** Polls health until SERVING; bounded by a deadline generous enough for a loaded CI machine. */
async function waitServing(address: string, child: ChildProcess): Promise<void> {
  const client = new healthpb.HealthServiceClient(address, credentials.createInsecure());
  const deadline = Date.now() + 45_000;
  try {
    while (Date.now() < deadline) {
      if (child.exitCode !== null)
        throw new Error(`coordinator exited with ${child.exitCode} before serving`);
      const ok = await new Promise<boolean>((resolve) =>
        client.check({ service: "" }, new Metadata(), { deadline: Date.now() + 500 }, (err, r) =>
          resolve(!err && r.status === healthpb.HealthCheckResponse_ServingStatus.SERVING_STATUS_SERVING),
        ),
      );
      if (ok) return;
      await new Promise((res) => setTimeout(res, 50));
    }
  } finally {
    client.close();
  }
  throw new Error(`${address} never became SERVING`);
}

/** A directory with a key directory from bootstrap; children started are killed after the test. */
async function keyDirFixture(t: TestContext) {
  const dir = mkdtempSync(join(tmpdir(), "isthmus-coordinator-"));
  const keys = join(dir, "keys");
  const children: ChildProcess[] = [];
  t.after(() => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  await auth.bootstrapKeyDir(keys);
  return { dir, keys, children };
}

test("isthmus coordinator: serves the admin CLI, stops on SIGTERM, keeps intent across restarts", async (t) => {
  const { dir, keys, children } = await keyDirFixture(t);
  const address = `127.0.0.1:${await fixedPort()}`;
  const nodeArgs = ["--id", "c1", "--listen", address, "--data-dir", join(dir, "c1"), "--key-dir", keys];
  const env = { ISTHMUS_SERVER: address, ISTHMUS_TOKEN_FILE: join(keys, "admin.token") };

  const first = startNode(nodeArgs);
  children.push(first);
  await waitServing(address, first);
  const applied = await runCli(["apply", "-f", SAMPLE], { env });
  assert.equal(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /16 created, 0 updated, 0 unchanged/);
  // Real tokens: a viewer may read but not write; no token at all is refused.
  const { signer, settings } = await auth.loadSigningKeyDir(keys);
  const viewer = await auth.mintAdminToken(signer, settings, { subject: "ops", role: "viewer", ttlSec: 600 });
  const fed = new federationpb.FederationServiceClient(address, credentials.createInsecure());
  const asViewer = new Metadata();
  asViewer.set("authorization", `Bearer ${viewer}`);
  const unary = <Res>(f: (cb: (err: ServiceError | null, r: Res) => void) => void) =>
    new Promise<{ err: ServiceError | null; res?: Res }>((resolve) => f((err, res) => resolve({ err, res })));
  const listed = await unary<federationpb.ListResponse>((cb) => fed.list({ kind: 0 }, asViewer, cb));
  assert.equal(listed.err, null);
  assert.equal(listed.res?.objects.length, 16);
  const write = await unary((cb) =>
    fed.create({ object: { securityGroup: { meta: undefined, stateless: false } } }, asViewer, cb),
  );
  assert.equal(write.err?.code, status.PERMISSION_DENIED);
  const anonymous = await unary((cb) => fed.list({ kind: 0 }, new Metadata(), cb));
  assert.equal(anonymous.err?.code, status.UNAUTHENTICATED);
  fed.close();

  const exited = new Promise<number | null>((resolve) => first.once("exit", (code) => resolve(code)));
  first.kill("SIGTERM");
  assert.equal(await exited, 0, "clean exit on SIGTERM");

  const second = startNode(nodeArgs);
  children.push(second);
  await waitServing(address, second);
  const again = await runCli(["apply", "-f", SAMPLE], { env });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /0 created, 0 updated, 16 unchanged/, "the intent survived the restart");
  const nets = await runCli(["get", "network", "web", "-o", "json"], { env });
  assert.equal(nets.code, 0, nets.stderr);
  assert.equal((JSON.parse(nets.stdout) as { network: { vni: number } }).network.vni, 0x100000);
  second.kill("SIGTERM");
});

test("isthmus coordinator re-executes itself without V8's memory reducer, unless told to keep it", async (t) => {
  const { dir, keys, children } = await keyDirFixture(t);
  for (const [keep, on, reexecuted, stop] of [
    [undefined, false, true, "SIGTERM"],
    [undefined, false, true, "SIGKILL"],
    ["1", true, false, "SIGTERM"],
  ] as const) {
    const address = `127.0.0.1:${await fixedPort()}`;
    const env = { ...process.env };
    delete env[MEMORY_REDUCER_ENV];
    if (keep !== undefined) env[MEMORY_REDUCER_ENV] = keep;
    const child = spawn(
      process.execPath,
      [
        CLI,
        "coordinator",
        "--id",
        "c1",
        "--listen",
        address,
        "--data-dir",
        join(dir, `c1-${keep}`),
        "--key-dir",
        keys,
      ],
      {
        stdio: ["ignore", "pipe", "inherit"],
        env,
      },
    );
    children.push(child);
    const logged = new Promise<{ pid: number; memoryReducer: boolean }>((resolve) =>
      createInterface({ input: child.stdout! }).on("line", (line) => {
        const rec = JSON.parse(line) as { pid: number; memoryReducer?: boolean };
        if (rec.memoryReducer !== undefined) resolve({ pid: rec.pid, memoryReducer: rec.memoryReducer });
      }),
    );
    await waitServing(address, child);
    const rec = await logged;
    assert.equal(rec.memoryReducer, on, `${MEMORY_REDUCER_ENV}=${keep}`);
    assert.equal(rec.pid !== child.pid, reexecuted, "the node is a child of the process started");
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    child.kill(stop);
    if (stop === "SIGTERM")
      assert.equal(await exited, 0, "SIGTERM reaches the node; it exits cleanly, and so does its parent");
    else await exited;
    // Killed outright, the parent cannot pass anything on: the node sees it gone and stops itself.
    const deadline = Date.now() + 30_000;
    while (pidAlive(rec.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!pidAlive(rec.pid), `after ${stop} to the process started, the node itself is gone`);
  }
  const bad = await runCli(["coordinator", "--id", "c1", "--data-dir", "x", "--key-dir", "y"], {
    env: { [MEMORY_REDUCER_ENV]: "yes" },
  });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /ISTHMUS_MEMORY_REDUCER must be 0 or 1, got "yes"/);
});

test("isthmus coordinator refuses plaintext off loopback without --insecure, naming the address", async () => {
  const r = await runCli([
    "coordinator",
    "--id",
    "c1",
    "--listen",
    "127.0.0.1:7999",
    "--peers",
    "c1=127.0.0.1:7999,c2=192.0.2.10:7400",
    "--data-dir",
    "/nonexistent",
    "--key-dir",
    "/nonexistent",
  ]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /192\.0\.2\.10:7400/);
  assert.match(r.stderr, /--insecure/);
  const bad = await runCli([
    "coordinator",
    "--id",
    "c1",
    "--peers",
    "c1",
    "--data-dir",
    "x",
    "--key-dir",
    "y",
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--peers: "c1" is not id=host:port/);
});
