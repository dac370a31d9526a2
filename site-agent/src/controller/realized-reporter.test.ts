import assert from "node:assert/strict";
import { test } from "node:test";
import { credentials } from "@grpc/grpc-js";
import { silentLogger, type sitesyncpb, topologypb } from "@isthmus/schema";
import { RealizedReporter, type RealizedReporterOptions } from "./realized-reporter.js";
import { FakeCoordinator } from "./test-support/fake-coordinator.js";
import { IntentIndex, type LocalPortBinding } from "./translate/index.js";

async function until<T>(what: string, f: () => T | undefined | false, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function port(i: number, hostId = "h1"): LocalPortBinding {
  return {
    id: `port-${i}`,
    name: `vm${i}`,
    networkId: "net",
    hostId,
    interfaceName: `tap${i}`,
    mac: `02:00:00:00:00:${i.toString(16).padStart(2, "0")}`,
    ips: [`10.0.0.${i}`],
    securityGroupIds: [],
    tunnelKey: i,
  };
}

function world() {
  const index = new IntentIndex("a");
  index.putHost({
    id: "h1",
    name: "host-1",
    tunnelIp: "192.0.2.1",
    tunnelPort: 4789,
    role: topologypb.HostRole.HOST_ROLE_HOST,
    wanIp: "",
    wanPort: 0,
  });
  index.putHost({
    id: "h2",
    name: "host-2",
    tunnelIp: "192.0.2.2",
    tunnelPort: 4789,
    role: topologypb.HostRole.HOST_ROLE_HOST,
    alive: false,
    wanIp: "",
    wanPort: 0,
  });
  return index;
}

function reporter(
  index: IntentIndex,
  coord: FakeCoordinator,
  o: Partial<RealizedReporterOptions> = {},
): RealizedReporter {
  let n = 0;
  return new RealizedReporter(index, {
    site: "a",
    addresses: [coord.address],
    credentials: credentials.createInsecure(),
    batchMs: 20,
    maxPending: 3,
    backoffInitialMs: 20,
    backoffMaxMs: 100,
    // A report the coordinator got but whose answer missed this deadline is sent again in full
    // (correctly): on a loaded machine 1 s was missed, and the "delta" came as a full report.
    timeoutMs: 10_000,
    healthEveryMs: 60_000,
    health: (): sitesyncpb.SiteHealth => ({
      databaseOk: true,
      hostsTotal: 2,
      hostsAlive: 1,
      controller: "ctl-1",
      detail: `report ${++n}`,
      appliedIndex: 7,
      stalenessMs: 0,
      topologyRevision: 3,
    }),
    log: silentLogger(),
    ...o,
  });
}

test("reports: full first, then batched deltas, full again when the queue bound is passed; health on each", async (t) => {
  const coord = new FakeCoordinator();
  await coord.start();
  const index = world();
  for (const i of [1, 2]) index.putLocalPort(port(i));
  index.putLocalPort(port(3, "")); // not bound: not reported
  const r = reporter(index, coord);
  t.after(async () => {
    await r.stop();
    await coord.stop();
  });
  r.start();
  const first = await until("first report", () => coord.reports[0]);
  assert.equal(first.full, true);
  assert.deepEqual(first.ports.map((p) => [p.meta?.id, p.host]).sort(), [
    ["port-1", "host-1"],
    ["port-2", "host-1"],
  ]);
  assert.equal(first.health?.controller, "ctl-1");
  assert.equal(first.health?.hostsAlive, 1);
  assert.equal(first.health?.appliedIndex, 7);

  // Two changes within the batch window: one delta with both (a removal among them).
  index.putLocalPort(port(4));
  index.removeLocalPort("port-1");
  r.changed("port", "port-4");
  r.changed("port", "port-1");
  const delta = await until("delta", () => coord.reports[1]);
  assert.equal(delta.full, false);
  assert.deepEqual(
    delta.ports.map((p) => p.meta?.id),
    ["port-4"],
  );
  assert.deepEqual(delta.removedPortIds, ["port-1"]);
  assert.ok(delta.health, "every report carries health");

  // More changes than maxPending (3) before a flush: the next report is full instead.
  for (const i of [5, 6, 7, 8, 9]) {
    index.putLocalPort(port(i));
    r.changed("port", `port-${i}`);
  }
  const over = await until("report after overflow", () => coord.reports[2]);
  assert.equal(over.full, true);
  assert.deepEqual(over.ports.map((p) => p.meta?.id).sort(), [
    "port-2",
    "port-4",
    "port-5",
    "port-6",
    "port-7",
    "port-8",
    "port-9",
  ]);
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(coord.reports.length, 3, "nothing more without changes (health interval is long)");
});

test("with nothing to report, health-only reports go every healthEveryMs; a failed report is retried in full", async (t) => {
  const coord = new FakeCoordinator();
  await coord.start();
  const index = world();
  index.putLocalPort(port(1));
  const log = silentLogger();
  const warn = t.mock.method(log, "warn");
  const r = reporter(index, coord, { healthEveryMs: 50, log });
  t.after(async () => {
    await r.stop();
    await coord.stop();
  });
  r.start();
  await until("three reports", () => coord.reports.length >= 3);
  const [full, ...rest] = coord.reports;
  assert.equal(full!.full, true);
  for (const h of rest.slice(0, 2)) {
    assert.equal(h.full, false);
    assert.deepEqual(h.ports, []);
    assert.deepEqual(h.removedPortIds, []);
    assert.equal(h.health?.hostsTotal, 2);
  }
  assert.notEqual(rest[0]!.health?.detail, full!.health?.detail, "health is taken fresh for each report");

  // The coordinator goes away: a change cannot be delivered; when it is back, a full report
  // covers what was lost.
  await coord.stop();
  index.putLocalPort(port(2));
  r.changed("port", "port-2");
  // A report carrying port-2 must have failed before the coordinator returns (a fixed wait can be
  // too short on a loaded machine, and the change would then go out as a plain delta). The first
  // failure may be of a report already in flight without it; the second began after the change.
  const failedBefore = warn.mock.callCount();
  await until("a report with port-2 failed", () => warn.mock.callCount() >= failedBefore + 2);
  const before = coord.reports.length;
  await coord.start();
  const after = await until("report after the coordinator returns", () => coord.reports[before]);
  assert.equal(after.full, true);
  assert.deepEqual(after.ports.map((p) => p.meta?.id).sort(), ["port-1", "port-2"]);
});

test("a gateway host marked not alive is withdrawn from the published endpoints, and returns with its heartbeats", async (t) => {
  const coord = new FakeCoordinator();
  await coord.start();
  t.after(() => coord.stop());
  const index = world();
  const gateway = (id: string, name: string, wanIp: string, alive: boolean) => ({
    id,
    name,
    tunnelIp: wanIp,
    tunnelPort: 4789,
    role: topologypb.HostRole.HOST_ROLE_GATEWAY,
    alive,
    wanIp,
    wanPort: 0,
  });
  index.putHost(gateway("g1", "gw-1", "198.51.100.1", true));
  index.putHost(gateway("g2", "gw-2", "198.51.100.2", true));
  const r = reporter(index, coord);
  r.start();
  t.after(() => r.stop());
  const hosts = (rep: sitesyncpb.ReportRealizedRequest) => rep.gatewayEndpoints.map((e) => e.host).sort();
  const first = await until("the first report", () => coord.reports[0]);
  assert.deepEqual(hosts(first), ["gw-1", "gw-2"]);

  // Host liveness marks gw-1 down: the next (full) report names only gw-2.
  index.putHost(gateway("g1", "gw-1", "198.51.100.1", false));
  r.changed("host", "g1");
  const down = await until("a report without gw-1", () => coord.reports.slice(1).find((x) => x.full));
  assert.deepEqual(hosts(down), ["gw-2"]);

  // Both down: a full report with no endpoints (the federation removes the site's gateway).
  index.putHost(gateway("g2", "gw-2", "198.51.100.2", false));
  r.changed("host", "g2");
  const none = await until("a report with no endpoints", () =>
    coord.reports.slice(2).find((x) => x.full && x.gatewayEndpoints.length === 0),
  );
  assert.equal(none.full, true);

  index.putHost(gateway("g1", "gw-1", "198.51.100.1", true));
  r.changed("host", "g1");
  const back = await until("gw-1 back", () =>
    coord.reports.slice(3).find((x) => x.gatewayEndpoints.some((e) => e.host === "gw-1")),
  );
  assert.deepEqual(hosts(back), ["gw-1"]);
});
