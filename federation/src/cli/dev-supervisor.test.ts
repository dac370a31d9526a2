import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { createLogger } from "@isthmus/schema";
import { type ChildRecord, pidAlive, Supervisor } from "./dev-supervisor.js";

// A stand-in for the `isthmus` binary: logs JSON lines, says "ready", then behaves as argv asks.
const FAKE = `
import { existsSync, writeFileSync } from "node:fs";
const [mode, marker] = process.argv.slice(2);
const log = (msg, extra = {}) => process.stdout.write(JSON.stringify({ level: "info", msg, ...extra }) + "\\n");
process.on("SIGTERM", () => { log("bye"); process.exit(0); });
if (mode === "never-ready") { console.error("cannot open the thing"); process.exit(4); }
log("hello", { pid: process.pid, marker: process.env.ISTHMUS_TEST_MARKER, execArgv: process.execArgv });
process.stdout.write("not json\\n");
log("ready");
const firstRun = marker && !existsSync(marker);
if (marker) writeFileSync(marker, "ran");
if (mode === "always-crash" || (mode === "crash-once" && firstRun)) {
  setTimeout(() => { console.error("boom from " + process.pid); process.exit(3); }, 50);
}
setInterval(() => {}, 1000);
`;

const dir = mkdtempSync(join(tmpdir(), "isthmus-supervisor-"));
const cli = join(dir, "fake-isthmus.mjs");
writeFileSync(cli, FAKE);
after(() => rmSync(dir, { recursive: true, force: true }));

function harness(extra: { maxRestarts?: number } = {}) {
  const relayed: string[] = [];
  const own: ChildRecord[] = [];
  const fatal: Error[] = [];
  const log = createLogger({
    name: "test",
    level: "debug",
    destination: { write: (s: string) => own.push(JSON.parse(s) as ChildRecord) },
  });
  const sup = new Supervisor({
    log,
    cli,
    write: (line) => relayed.push(line),
    onFatal: (err) => fatal.push(err),
    backoffInitialMs: 20,
    backoffMaxMs: 100,
    stopTimeoutMs: 5_000,
    ...extra,
  });
  return { sup, relayed, own, fatal };
}

async function until(what: string, f: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("dev supervisor", () => {
  it("gives a child the environment and node flags its spec says", async () => {
    const h = harness();
    const c = await h.sup.start({
      name: "ams/agent",
      args: ["steady"],
      tier: 1,
      ready: (r) => r.msg === "ready",
      env: (base) => ({ ...base, ISTHMUS_TEST_MARKER: "from-the-spec" }),
      nodeArgs: ["--no-memory-reducer"],
    });
    const hello = JSON.parse(h.relayed[0] ?? "{}") as ChildRecord & { marker?: string; execArgv?: string[] };
    assert.equal(hello.msg, "hello");
    assert.equal(hello.marker, "from-the-spec");
    assert.deepEqual(hello.execArgv, ["--no-memory-reducer"]);
    await h.sup.stopAll();
    assert.ok(!pidAlive(c.pid ?? 0));
  });

  it("starts a child when it logs ready, tags its lines, and stops it with SIGTERM", async () => {
    const h = harness();
    const afterExit: number[] = [];
    const c = await h.sup.start({
      name: "ams/agent",
      args: ["steady"],
      tier: 1,
      ready: (r) => r.msg === "ready",
      afterExit: async () => {
        afterExit.push(Date.now());
      },
    });
    const pid = c.pid ?? 0;
    assert.ok(pidAlive(pid));
    const hello = JSON.parse(h.relayed[0] ?? "{}") as ChildRecord;
    assert.equal(hello.proc, "ams/agent");
    assert.equal(hello.msg, "hello");
    await until("the non-JSON line", () => h.own.some((r) => r.msg === "not json" && r.proc === "ams/agent"));
    await h.sup.stopAll();
    assert.equal(pidAlive(pid), false);
    assert.equal(afterExit.length, 1);
    assert.equal(c.restarts, 0, "a requested stop is not a crash");
    await until("bye relayed", () => h.relayed.some((l) => l.includes('"bye"')));
  });

  it("reports a child that dies and restarts it with backoff", async () => {
    const h = harness();
    const c = await h.sup.start({
      name: "fra/controller",
      args: ["crash-once", join(dir, "crash-once.marker")],
      tier: 1,
      ready: (r) => r.msg === "ready",
    });
    const first = c.pid;
    await until(
      "a restart",
      () =>
        c.restarts === 1 && c.pid !== first && h.relayed.filter((l) => l.includes('"ready"')).length === 2,
    );
    const report = h.own.find((r) => r.msg === "fra/controller exited unexpectedly; restarting");
    assert.ok(report, "the death is logged");
    assert.equal(report.exit, "code 3");
    assert.match(String((report.stderr as string[]).join("\n")), /boom from/);
    assert.deepEqual(h.fatal, []);
    await h.sup.stopAll();
    assert.equal(pidAlive(c.pid ?? 0), false);
  });

  it("with maxRestarts, gives up on a child that keeps dying and says why", async () => {
    const h = harness({ maxRestarts: 2 });
    await h.sup.start({ name: "ams/gw", args: ["always-crash"], tier: 2, ready: (r) => r.msg === "ready" });
    await until("the fatal report", () => h.fatal.length === 1);
    assert.match(h.fatal[0]?.message ?? "", /ams\/gw exited \(code 3\) 3 times in a row; giving up/);
    assert.match(h.fatal[0]?.message ?? "", /boom from/);
    await h.sup.stopAll();
  });

  it("fails the start of a child that exits before it is ready, with its stderr", async () => {
    const h = harness();
    await assert.rejects(
      h.sup.start({
        name: "ams/controller",
        args: ["never-ready"],
        tier: 1,
        ready: (r) => r.msg === "ready",
      }),
      /ams\/controller exited \(code 4\) before it was ready; its last stderr lines:\n {2}cannot open the thing/,
    );
    await h.sup.stopAll();
  });

  it("stops higher tiers first", async () => {
    const h = harness();
    const order: string[] = [];
    for (const [name, tier] of [
      ["controller", 1],
      ["agent", 2],
    ] as const) {
      await h.sup.start({
        name,
        args: ["steady"],
        tier,
        ready: (r) => r.msg === "ready",
        afterExit: async () => {
          order.push(name);
        },
      });
    }
    await h.sup.stopAll();
    assert.deepEqual(order, ["agent", "controller"]);
  });
});
