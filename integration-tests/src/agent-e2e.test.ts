// The whole path end to end: a coordinator (`isthmus coordinator` process) takes intent from
// `isthmus apply` — two networks, a router between them, a security group — a real site controller
// on PostgreSQL follows it, an operator creates and binds ports through SiteService, and two
// `isthmus agent` processes (registered with the controller, watching with the host tokens it
// issued) forward ping and TCP between namespace VMs on one network and across the router. A rule
// deleted at the federation then blocks what it allowed.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { credentials, Metadata, status } from "@grpc/grpc-js";
import { auth } from "@isthmus/federation";
import { silentLogger, sitepb } from "@isthmus/schema";
import {
  agentTesting,
  SiteController,
  SiteTokenSource,
  startTestPostgres,
  type TestPostgres,
} from "@isthmus/site-agent";
import { type AgentProc, spawnAgent } from "./harness/agent-process.js";
import { runCli } from "./harness/cli.js";
import { CoordinatorGroup } from "./harness/coordinator-group.js";

const { NetnsLab, rootSkipReason } = agentTesting;
const skip = rootSkipReason(["ip", "ping", "nc"]);
if (skip) console.log(`# skipping agent end-to-end tests: ${skip}`);

async function freeUdpPort(ip: string): Promise<number> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, ip, () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

async function until<T>(
  what: string,
  f: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 30_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const INTENT = `
securityGroups:
  - name: web
    rules:
      - name: web-out
        direction: egress
      - name: web-icmp
        direction: ingress
        protocol: icmp
      - name: web-5001
        direction: ingress
        protocol: tcp
        ports: 5001
networks:
  - name: left
    subnets: [{ cidr: 10.61.0.0/24, gatewayIp: 10.61.0.1 }]
    sites: [ams]
  - name: right
    subnets: [{ cidr: 10.62.0.0/24, gatewayIp: 10.62.0.1 }]
    sites: [ams]
routers:
  - name: r1
    interfaces:
      - network: left
      - network: right
`;

describe("agents driven by a real site controller and coordinator", { skip }, () => {
  const lab = new NetnsLab("ae");
  let pgs: TestPostgres | undefined;
  let pgSkip: string | undefined;
  let base = "";
  let group: CoordinatorGroup | undefined;
  let ctl: SiteController | undefined;
  let adminTokenFile = "";
  let siteClient: sitepb.SiteServiceClient | undefined;
  const adminMd = new Metadata();
  const agents: AgentProc[] = [];
  const vms: Record<string, agentTesting.Vm> = {};

  /** A SiteService call as the operator; retried while the (single) replica is between leases. */
  const call = async <Req, Res>(
    fn: (req: Req, md: Metadata, cb: (e: Error | null, r: Res) => void) => unknown,
    req: Req,
  ): Promise<Res> => {
    const end = Date.now() + 30_000;
    for (;;) {
      try {
        return await new Promise<Res>((resolve, reject) =>
          fn.call(siteClient, req, adminMd, (e: Error | null, r: Res) => (e ? reject(e) : resolve(r))),
        );
      } catch (err) {
        if ((err as { code?: number }).code !== status.UNAVAILABLE || Date.now() > end) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  };

  const cli = async (args: string[]) => {
    const r = await runCli([...args, "--server", group!.addresses[0]!, "--token-file", coordAdmin()]);
    assert.equal(r.code, 0, `isthmus ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  const coordAdmin = () => join(base, "coord-keys", auth.KEY_DIR_FILES.adminToken);
  const idOf = async (kind: string, name: string) =>
    (JSON.parse(await cli(["get", kind, name, "-o", "json"])) as Record<string, { meta: { id: string } }>)[
      kind === "network" ? "network" : "securityGroup"
    ]!.meta.id;

  before(async () => {
    const t0 = Date.now();
    const stage = (what: string) => console.log(`# ${what} at ${Date.now() - t0} ms`);
    const r = await startTestPostgres();
    if ("skip" in r) {
      pgSkip = r.skip;
      console.log(`# skipping: ${r.skip}`);
      return;
    }
    pgs = r;
    base = await mkdtemp(join(tmpdir(), "isthmus-agent-e2e-"));
    const keyDir = join(base, "coord-keys");
    assert.equal((await runCli(["bootstrap", "--dir", keyDir])).code, 0);
    stage("postgres up");
    group = await CoordinatorGroup.start(1, base, keyDir);
    stage("coordinator serving");
    const add = await runCli([
      "site",
      "add",
      "ams",
      "--server",
      group.addresses[0]!,
      "--token-file",
      coordAdmin(),
      "-o",
      "json",
    ]);
    assert.equal(add.code, 0, add.stderr);
    const onboarding = (JSON.parse(add.stdout) as { token: string }).token;
    const siteDir = join(base, "ams");
    const joined = await runCli([
      "site",
      "join",
      "--token",
      onboarding,
      "--federation",
      group.addresses.join(","),
      "--key-dir",
      siteDir,
    ]);
    assert.equal(joined.code, 0, joined.stderr);
    const tokens = await SiteTokenSource.fromCredential(join(siteDir, "credential.json"));
    ctl = await SiteController.start({
      site: "ams",
      dbUrl: await pgs.createDatabase(),
      federation: group.addresses,
      federationMetadata: () => tokens.metadata(),
      listen: "127.0.0.1:0",
      log: silentLogger(),
      // One replica: a long lease so a starved event loop (CI load) does not make it step down.
      tuning: {
        leaseTtlMs: 15_000,
        leaseRenewMs: 1_000,
        backoffInitialMs: 50,
        backoffMaxMs: 500,
        feedPollMs: 30,
        ackEveryMs: 50,
        reportBatchMs: 30,
      },
    });
    stage("site onboarded, controller started");
    const admin = (await ctl.tokens.issue("admin", "admin", 3600)).token;
    adminTokenFile = join(base, "site-admin.token");
    await writeFile(adminTokenFile, `${admin}\n`, { mode: 0o600 });
    adminMd.set("authorization", `Bearer ${admin}`);
    siteClient = new sitepb.SiteServiceClient(ctl.address, credentials.createInsecure());

    // Intent at the federation, as an admin applies it.
    const intentFile = join(base, "intent.yaml");
    await writeFile(intentFile, INTENT);
    await cli(["apply", "-f", intentFile]);

    stage("intent applied");
    // Two hosts register themselves with the controller.
    for (const [name, ip] of [
      ["host-a", "127.0.0.11"],
      ["host-b", "127.0.0.12"],
    ] as const) {
      agents.push(
        await spawnAgent([
          "--name",
          name,
          "--admin-token-file",
          adminTokenFile,
          "--token-file",
          join(base, `${name}.token`),
          "--controller",
          ctl.address,
          "--tunnel-ip",
          ip,
          "--tunnel-port",
          String(await freeUdpPort(ip)),
          "--metrics-listen",
          "127.0.0.1:0",
          "--admin-listen",
          "127.0.0.1:0",
        ]),
      );
    }
    stage("agents started");
  });

  after(async () => {
    for (const a of agents) await a.stop();
    siteClient?.close();
    await ctl?.stop();
    await group?.stopAll();
    await pgs?.stop();
    lab.cleanup();
    if (base) await rm(base, { recursive: true, force: true });
  });

  const ping = (from: string, to: string, count = 1) =>
    lab.exec(vms[from]!.ns, ["ping", "-c", String(count), "-i", "0.2", "-W", "1", vms[to]!.ip]);

  /** Sends `bytes` from one VM to another over TCP; resolves with how many arrived. */
  async function tcp(from: string, to: string, port: number, bytes: number): Promise<number> {
    const server = lab.exec(vms[to]!.ns, ["sh", "-c", `timeout 15 nc -l ${port} | wc -c`], 20_000);
    // nc needs a moment to listen; retry the client until it connects (bounded).
    let sent = { code: -1, stdout: "", stderr: "" };
    for (let i = 0; i < 20 && sent.code !== 0; i++) {
      sent = await lab.exec(vms[from]!.ns, [
        "sh",
        "-c",
        `head -c ${bytes} /dev/urandom | nc -N -w 5 ${vms[to]!.ip} ${port}`,
      ]);
      if (sent.code !== 0) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(sent.code, 0, `TCP ${from} → ${to}:${port}: ${sent.stderr}`);
    return Number((await server).stdout.trim());
  }

  test("an operator creates and binds ports through SiteService; VMs ping and transfer over TCP", async (t) => {
    if (pgSkip) return t.skip(pgSkip);
    const left = await until("network left at the federation", () => idOf("network", "left"));
    const right = await idOf("network", "right");
    const web = await idOf("security-group", "web");
    await until("both networks applied at the site", async () => {
      const st = await call<sitepb.SiteStatusRequest, sitepb.SiteStatusResponse>(siteClient!.status, {});
      return st.appliedIndex > 0 && ctl!.status().federationConnected;
    });
    const hosts = await until("both hosts registered", async () => {
      const r = await call<sitepb.ListHostsRequest, sitepb.ListHostsResponse>(siteClient!.listHosts, {});
      return r.hosts.length === 2 ? new Map(r.hosts.map((h) => [h.name, h.id])) : undefined;
    });

    vms.vm1 = lab.addVm("02:00:00:61:00:11", "10.61.0.11/24", "10.61.0.1");
    vms.vm2 = lab.addVm("02:00:00:61:00:12", "10.61.0.12/24", "10.61.0.1");
    vms.vm3 = lab.addVm("02:00:00:62:00:13", "10.62.0.13/24", "10.62.0.1");
    const place: [string, string, string][] = [
      ["vm1", left, "host-a"],
      ["vm2", left, "host-b"],
      ["vm3", right, "host-b"],
    ];
    for (const [name, network, host] of place) {
      const vm = vms[name]!;
      const created = await call<sitepb.CreatePortRequest, sitepb.PortResponse>(siteClient!.createPort, {
        name,
        networkId: network,
        mac: vm.mac,
        ips: [vm.ip],
        securityGroupIds: [web],
        hostId: "",
        interfaceName: "",
        id: "",
      });
      assert.ok(created.port!.tunnelKey >= 1 && created.port!.tunnelKey <= 0x0fffff, "site-local key");
      const bound = await call<sitepb.BindPortRequest, sitepb.PortResponse>(siteClient!.bindPort, {
        portId: created.port!.id,
        hostId: hosts.get(host)!,
        interfaceName: vm.hostIf,
      });
      assert.equal(bound.port!.hostId, hosts.get(host));
    }

    // Agents bind the ports as the watch delivers them; the first pings may find them unbound.
    const started = Date.now();
    await until("vm1 → vm2 ping on one network", async () => (await ping("vm1", "vm2")).code === 0);
    console.log(`# first ping across agents ${Date.now() - started} ms after the ports were bound`);
    assert.equal((await ping("vm1", "vm2", 3)).code, 0, "steady ping on one network");
    await until("vm1 → vm3 ping across the router", async () => (await ping("vm1", "vm3")).code === 0);
    assert.equal((await ping("vm1", "vm3", 3)).code, 0, "steady ping across the router");

    assert.equal(await tcp("vm1", "vm2", 5001, 2_000_000), 2_000_000, "TCP on one network");
    assert.equal(await tcp("vm1", "vm3", 5001, 2_000_000), 2_000_000, "TCP across the router");

    // The group allows TCP 5001 only: 5002 is refused by vm2's ingress chain.
    const blocked = lab.spawn(vms.vm2!.ns, ["timeout", "10", "nc", "-l", "5002"]);
    t.after(() => blocked.kill());
    await lab.listening(vms.vm2!.ns, 5002);
    const denied = await lab.exec(vms.vm1!.ns, ["sh", "-c", `echo hi | nc -N -w 2 ${vms.vm2!.ip} 5002`]);
    assert.notEqual(denied.code, 0, "TCP 5002 must not connect: the group does not allow it");
  });

  test("deleting a rule at the federation blocks what it allowed; the rest keeps working", async (t) => {
    if (pgSkip) return t.skip(pgSkip);
    assert.ok(vms.vm1 && vms.vm2, "the previous test placed the VMs");
    await until("ping works before the change", async () => (await ping("vm1", "vm2")).code === 0, 15_000);
    await cli(["delete", "security-group-rule", "web-icmp"]);
    const blockedAfter = Date.now();
    await until("ping blocked once the rule is gone", async () => (await ping("vm1", "vm2")).code !== 0);
    console.log(`# ICMP blocked ${Date.now() - blockedAfter} ms after the delete`);
    // A blocked ping is not a broken path: TCP 5001 is still allowed.
    assert.equal(await tcp("vm1", "vm3", 5001, 200_000), 200_000, "TCP 5001 still passes");
    // And the metrics count the drops by the group's chain.
    const a = agents[0]!; // the sender simulates the whole path, vm2's ingress chain included
    const text = await (await fetch(`http://127.0.0.1:${a.metricsPort}/metrics`)).text();
    assert.match(text, /isthmus_agent_drops_total\{reason="dropped_by_rule_in_chain"\} [1-9]/);
  });
});
