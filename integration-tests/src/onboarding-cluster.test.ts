// Site onboarding against a real three-node coordinator group (three `isthmus coordinator` processes
// on loopback, raft between them): the onboarding token works once and its replay fails on the other
// nodes; the site authenticates with its own key; revoking it through one node cuts its stream on
// another and every node refuses it afterwards.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { credentials, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { auth } from "@isthmus/federation";
import { healthpb, sitesyncpb } from "@isthmus/schema";
import { SiteTokenSource } from "@isthmus/site-agent";
import { CLI, runCli } from "./harness/cli.js";
import { fixedPort } from "./harness/ports.js";

async function waitServing(address: string, child: ChildProcess): Promise<void> {
  const client = new healthpb.HealthServiceClient(address, credentials.createInsecure());
  const deadline = Date.now() + 45_000;
  try {
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`coordinator at ${address} exited with ${child.exitCode}`);
      const ok = await new Promise<boolean>((resolve) =>
        client.check({ service: "" }, new Metadata(), { deadline: Date.now() + 500 }, (err, r) =>
          resolve(!err && r.status === healthpb.HealthCheckResponse_ServingStatus.SERVING_STATUS_SERVING),
        ),
      );
      if (ok) return;
      await new Promise((res) => setTimeout(res, 100));
    }
  } finally {
    client.close();
  }
  throw new Error(`${address} never became SERVING`);
}

/** Retries a CLI call while the group has no leader yet (bounded by a deadline). */
async function cliUntil(
  args: string[],
  env: NodeJS.ProcessEnv,
  ok: (r: { code: number | null; stderr: string }) => boolean,
) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await runCli(args, { env });
    if (ok(r) || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 250));
  }
}

const firstEvent = (s: NodeJS.EventEmitter) =>
  new Promise<{ data?: unknown; err?: ServiceError }>((resolve) => {
    s.once("data", (data) => resolve({ data }));
    s.once("error", (err: ServiceError) => resolve({ err }));
  });

test("onboarding on a 3-node coordinator group: single use across nodes, site identity, revocation everywhere", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "isthmus-onboard-cluster-"));
  const children: ChildProcess[] = [];
  t.after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });
  const keys = join(dir, "keys");
  await auth.bootstrapKeyDir(keys);
  const ids = ["c1", "c2", "c3"];
  const addrs: string[] = [];
  for (const _ of ids) addrs.push(`127.0.0.1:${await fixedPort()}`);
  const peers = ids.map((id, i) => `${id}=${addrs[i]}`).join(",");
  for (const [i, id] of ids.entries()) {
    const child = spawn(
      process.execPath,
      [
        CLI,
        "coordinator",
        "--id",
        id,
        "--listen",
        addrs[i]!,
        "--peers",
        peers,
        "--data-dir",
        join(dir, id),
        "--key-dir",
        keys,
      ],
      { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, ISTHMUS_LOG_LEVEL: "warn" } },
    );
    children.push(child);
  }
  await Promise.all(addrs.map((a, i) => waitServing(a, children[i]!)));
  const env = { ISTHMUS_TOKEN_FILE: join(keys, auth.KEY_DIR_FILES.adminToken) };
  const [a1, a2, a3] = addrs as [string, string, string];

  const add = await cliUntil(
    ["site", "add", "paris", "--server", addrs.join(","), "-o", "json"],
    env,
    (r) => r.code === 0,
  );
  assert.equal(add.code, 0, add.stderr);
  const { token } = JSON.parse((add as { stdout: string }).stdout) as { token: string };

  const siteDir = join(dir, "site");
  const joined = await runCli(["site", "join", "--token", token, "--federation", a1, "--key-dir", siteDir]);
  assert.equal(joined.code, 0, joined.stderr);
  // Replays against the two other nodes, at the same time.
  const replays = await Promise.all(
    [a2, a3].map((other, i) =>
      runCli(["site", "join", "--token", token, "--federation", other, "--key-dir", join(dir, `thief-${i}`)]),
    ),
  );
  for (const [i, replay] of replays.entries()) {
    assert.equal(replay.code, 1, `replay at node ${i + 2} must fail`);
    assert.match(replay.stderr, /UNAUTHENTICATED.*already used/);
  }

  const source = await SiteTokenSource.fromCredential(join(siteDir, "credential.json"));
  const sync = new sitesyncpb.SiteSyncServiceClient(a3, credentials.createInsecure());
  t.after(() => sync.close());
  const stream = sync.watchIntent({ site: "paris", fromIndex: 0 }, await source.metadata());
  const ended = new Promise<ServiceError>((resolve) => stream.on("error", resolve));
  const first = await firstEvent(stream);
  assert.equal(first.err, undefined, first.err?.details);
  stream.on("data", () => {});

  const revoke = await runCli(["site", "revoke", "paris", "--server", addrs.join(",")], { env });
  assert.equal(revoke.code, 0, revoke.stderr);
  const cut = await ended;
  assert.equal(cut.code, status.UNAUTHENTICATED);
  assert.match(cut.details, /revoked/);

  const list = await runCli(["site", "list", "--server", a2, "-o", "json"], { env });
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout) as { sites: { name: string; state: string }[] };
  assert.equal(listed.sites.find((s) => s.name === "paris")?.state, "revoked");

  const sync2 = new sitesyncpb.SiteSyncServiceClient(a2, credentials.createInsecure());
  t.after(() => sync2.close());
  const again = await firstEvent(sync2.watchIntent({ site: "paris", fromIndex: 0 }, await source.metadata()));
  assert.equal(again.err?.code, status.UNAUTHENTICATED);

  for (const c of children) c.kill("SIGTERM");
  await Promise.all(
    children.map((c) => (c.exitCode !== null ? undefined : new Promise((r) => c.once("exit", r)))),
  );
});
