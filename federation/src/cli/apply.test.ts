import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { startTestCoordinator, type TestCoordinator } from "../api/test-support.js";
import { type ApplyRecord, applyIntent } from "./apply.js";
import { FederationClient, loadClientConfig } from "./connection.js";
import { IntentFileError, parseIntentFile } from "./intent-file.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const examples = join(root, "docs", "examples");
const cli = join(root, "federation", "dist", "cli", "main.js");

async function apply(
  client: FederationClient,
  file: string,
  text?: string,
  dryRun = false,
): Promise<ApplyRecord[]> {
  const records: ApplyRecord[] = [];
  await applyIntent(client, parseIntentFile(file, text), { dryRun, onRecord: (r) => records.push(r) });
  return records;
}

const count = (rs: ApplyRecord[], action: string) => rs.filter((r) => r.action === action).length;

function runCli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cli, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), 20_000);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out, err });
    });
  });
}

describe("isthmus apply", () => {
  let c: TestCoordinator;
  let client: FederationClient;
  let dir: string;
  before(async () => {
    c = await startTestCoordinator();
    client = new FederationClient(
      loadClientConfig({ server: c.started.address }, { ISTHMUS_TOKEN: "admin" }),
    );
    dir = mkdtempSync(join(tmpdir(), "isthmus-apply-"));
  });
  after(async () => {
    client.close();
    await c.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("applies the samples, and a second run changes nothing", async () => {
    for (const name of ["two-site-web.yaml", "three-site-dual-stack.yaml"]) {
      const file = join(examples, name);
      const first = await apply(client, file);
      assert.ok(count(first, "created") > 5, `${name}: ${JSON.stringify(first)}`);
      assert.equal(count(first, "updated"), 0);
      const second = await apply(client, file);
      assert.equal(count(second, "created"), 0, JSON.stringify(second));
      assert.equal(count(second, "updated"), 0, JSON.stringify(second));
      assert.equal(count(second, "unchanged"), first.length);
    }
    const edge = c.sm.byName("router", "edge");
    assert.equal(edge?.uplinks.length, 2);
    const ri = c.sm.byName("routerInterface", "edge-web");
    assert.equal(ri?.networkId, c.sm.byName("network", "web")?.meta?.id);
    const rule = c.sm.byName("securityGroupRule", "db-pg-from-web");
    assert.equal(rule?.remoteGroupId, c.sm.byName("securityGroup", "web")?.meta?.id);
  });

  it("updates only what changed, and a dry run changes nothing", async () => {
    const file = join(dir, "edited.yaml");
    const text = readFileSync(join(examples, "two-site-web.yaml"), "utf8").replace(
      "tier: db",
      "tier: database",
    );
    const before = c.sm.index;
    const dry = await apply(client, file, text, true);
    assert.deepEqual(
      dry.filter((r) => r.action !== "unchanged"),
      [{ kind: "network", name: "db", action: "updated", fields: ["labels"] }],
    );
    assert.equal(c.sm.index, before, "dry run wrote nothing");
    const real = await apply(client, file, text);
    assert.equal(count(real, "updated"), 1);
    assert.deepEqual(c.sm.byName("network", "db")?.meta?.labels, { tier: "database" });
  });

  it("names file, line and field for bad YAML, unknown fields and invalid values", async () => {
    const at = async (text: string, pattern: RegExp) => {
      const file = join(dir, "bad.yaml");
      await assert.rejects(apply(client, file, text), (err: unknown) => {
        assert.ok(err instanceof IntentFileError, String(err));
        assert.match(err.message, pattern);
        return true;
      });
    };
    await at("networks:\n  - name: x\n    subnets: [\n", /bad\.yaml:\d+:\d+: invalid YAML/);
    await at(
      "networks:\n  - name: x\n    subnetz: []\n",
      /bad\.yaml:3:5: unknown field "subnetz" in networks\[0\]/,
    );
    await at("netwroks: []\n", /bad\.yaml:1:1: unknown field "netwroks"/);
    await at("networks:\n  - name: x\n    mtu: big\n", /bad\.yaml:3:10: networks\[0\]\.mtu/);
    await at(
      "networks:\n  - name: bad-net\n    subnets:\n      - cidr: 10.0.0.0/24\n      - cidr: 10.1.0.0/33\n",
      /bad\.yaml:5:\d+: network "bad-net": INVALID_ARGUMENT: network\.subnets\[1\]\.cidr/,
    );
    await at(
      "routers:\n  - name: r9\n    interfaces:\n      - network: nowhere\n",
      /bad\.yaml:4:18: no network named "nowhere"/,
    );
  });

  it("runs as the real CLI against a coordinator", async () => {
    const env = { ISTHMUS_SERVER: c.started.address, ISTHMUS_TOKEN: "admin" };
    const file = join(examples, "two-site-web.yaml");
    // The previous test edited a label, so the first run puts it back; the second changes nothing.
    const first = await runCli(["apply", "-f", file], env);
    assert.equal(first.code, 0, first.err);
    assert.match(first.out, /network\/db updated \(labels\)/);
    const run = await runCli(["apply", "-f", file], env);
    assert.equal(run.code, 0, run.err);
    assert.match(run.out, /0 created, 0 updated, \d+ unchanged/);
    const get = await runCli(["get", "network", "-o", "json"], env);
    assert.equal(get.code, 0, get.err);
    const nets = JSON.parse(get.out) as { network: { meta: { name: string } } }[];
    assert.ok(nets.some((n) => n.network.meta.name === "web"));
    const del = await runCli(["delete", "network", "web"], env);
    assert.equal(del.code, 1);
    assert.match(del.err, /FAILED_PRECONDITION: .*edge-web/);
    const st = await runCli(["status"], env);
    assert.equal(st.code, 0, st.err);
    assert.match(st.out, /node local \(leader\)/);
    const badFile = join(dir, "typo.yaml");
    writeFileSync(badFile, "networks:\n  - name: web\n    sitez: [ams]\n");
    const typo = await runCli(["apply", "-f", badFile], env);
    assert.equal(typo.code, 1);
    assert.match(typo.err, /typo\.yaml:3:5: unknown field "sitez"/);
  });
});
