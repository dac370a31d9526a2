import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { intentpb } from "@isthmus/schema";
import { uplinkPortId } from "./ids.js";
import * as b from "./intent-builders.js";
import { IntentIndex } from "./intent-index.js";
import { overlayView } from "./prior-view.js";
import { TestWorld } from "./test-world.js";
import { translateAll, translateAllSteps, translateChange, translateLocalPort } from "./translate.js";
import type { IntentView } from "./view.js";

const { id } = b;

describe("IntentIndex", () => {
  it("returns prior versions and keeps reverse indexes in step when membership moves", () => {
    const ix = new IntentIndex("east");
    const p = (groups: string[]) =>
      b.portRecord("p", { site: "west", network: "n", mac: "02:00:00:00:00:01", ips: ["10.0.0.1"], groups });
    assert.deepEqual(ix.applyIntentChange(b.upsert(1, p(["a"]))), []);
    const prior = ix.applyIntentChange(b.upsert(2, p(["b"])));
    assert.deepEqual(prior[0]?.portRecord?.securityGroupIds, [id("a")]);
    assert.equal([...ix.portRecordsOfGroup(id("a"))].length, 0);
    assert.equal([...ix.portRecordsOfGroup(id("b"))].length, 1);
    assert.equal([...ix.portRecordsOfNetwork(id("n"))].length, 1);
    ix.applyIntentChange(b.remove(3, "portRecord", "p"));
    assert.equal([...ix.portRecordsOfGroup(id("b"))].length, 0);
    assert.equal(ix.size, 0);
  });

  it("finds a local port by name in one lookup, following renames and removals", () => {
    const ix = new IntentIndex("east");
    const port = (pid: string, name: string) => ({
      id: pid,
      name,
      networkId: "n",
      hostId: "",
      interfaceName: "",
      mac: "02:00:00:00:00:01",
      ips: [],
      securityGroupIds: [],
      tunnelKey: 1,
      adminStateUp: true,
    });
    ix.putLocalPort(port("p1", "web"));
    ix.putLocalPort(port("p2", "db"));
    assert.equal(ix.localPortNamed("web")?.id, "p1");
    assert.equal(ix.localPortNamed("db")?.id, "p2");
    assert.equal(ix.localPortNamed("cache"), undefined);
    ix.putLocalPort(port("p1", "www"));
    assert.equal(ix.localPortNamed("web"), undefined, "the old name is free after a rename");
    assert.equal(ix.localPortNamed("www")?.id, "p1");
    ix.removeLocalPort("p2");
    assert.equal(ix.localPortNamed("db"), undefined);
  });

  it("knows which site-local tunnel keys VM ports and derived ports hold, through every move", () => {
    const ix = new IntentIndex("east");
    const vm = (key: number) => ({
      id: "p1",
      name: "vm",
      networkId: "n",
      hostId: "",
      interfaceName: "",
      mac: "02:00:00:00:00:01",
      ips: [],
      securityGroupIds: [],
      tunnelKey: key,
      adminStateUp: true,
    });
    ix.putLocalPort(vm(5));
    assert.equal(ix.tunnelKeyInUse(5), true);
    ix.putLocalPort(vm(6));
    assert.equal(ix.tunnelKeyInUse(5), false, "released by the replaced binding");
    assert.equal(ix.tunnelKeyInUse(6), true);
    ix.setTunnelKey("uplink-1", 5);
    ix.setTunnelKey("uplink-1", 7);
    assert.deepEqual(
      [5, 6, 7].map((k) => ix.tunnelKeyInUse(k)),
      [false, true, true],
    );
    ix.setTunnelKey("uplink-1", 0);
    ix.removeLocalPort("p1");
    assert.deepEqual(
      [5, 6, 7, 0].map((k) => ix.tunnelKeyInUse(k)),
      [false, false, false, false],
    );
  });

  it("reverts a change exactly (a failed transaction leaves the index as it was)", () => {
    const ix = new IntentIndex("east");
    ix.applyIntentChange(
      b.upsert(
        1,
        b.network("n", { sites: ["east"] }),
        b.securityGroup("g"),
        b.router("r", { uplinks: [{ site: "east", ipCidr: "198.51.100.2/24" }] }),
      ),
    );
    const before = translateAll(ix);
    const change: intentpb.IntentChange = {
      index: 2,
      upserts: [b.network("n", { sites: ["east", "west"] }), b.securityGroup("g2")],
      deletes: b.remove(2, "router", "r").deletes,
    };
    const prior = ix.applyIntentChange(change);
    assert.notDeepEqual(translateAll(ix), before);
    ix.revertIntentChange(change, prior);
    assert.deepEqual(translateAll(ix), before);
    assert.equal([...ix.routersWithUplinkHere()].length, 1);
  });

  it("takes another index over whole (replaceWith) and translates in steps to the same result", () => {
    const build = (extra: boolean) => {
      const ix = new IntentIndex("east");
      ix.applyIntentChange(
        b.upsert(
          1,
          b.network("n", { sites: ["east", "west"] }),
          b.securityGroup("g"),
          b.router("r", { uplinks: [{ site: "east", ipCidr: "198.51.100.2/24" }] }),
          ...(extra ? [b.securityGroup("g2"), b.network("n2", { sites: ["east"] })] : []),
        ),
      );
      ix.setTunnelKey(uplinkPortId(id("r"), "east"), extra ? 9 : 7);
      return ix;
    };
    const target = build(true);
    const want = translateAll(build(true));
    const ix = build(false);
    ix.replaceWith(target);
    assert.deepEqual(translateAll(ix), want);
    assert.equal(ix.size, build(true).size);
    assert.equal(ix.tunnelKeyOf(uplinkPortId(id("r"), "east")), 9);
    assert.equal(ix.tunnelKeyInUse(9), true);
    assert.equal(ix.tunnelKeyInUse(7), false, "the replaced index's keys are gone");
    assert.equal(target.size, 0, "the source is left empty");
    // In steps of 2 units: several yields, the same objects and problems as in one go.
    const steps = translateAllSteps(ix, 2);
    let yields = 0;
    let r = steps.next();
    while (!r.done) {
      yields++;
      r = steps.next();
    }
    assert.ok(yields >= 2, `yielded ${yields} times`);
    assert.deepEqual(r.value, want);
    assert.throws(() => ix.replaceWith(new IntentIndex("west")), /site west/);
  });

  it("refuses to grow past its bound, naming the option, and keeps what it had", () => {
    const ix = new IntentIndex("east", { maxObjects: 2 });
    ix.applyIntentChange(b.upsert(1, b.securityGroup("a"), b.securityGroup("b")));
    assert.throws(() => ix.applyIntentChange(b.upsert(2, b.securityGroup("c"))), /maxObjects/);
    ix.applyIntentChange(b.upsert(3, b.securityGroup("a", { stateless: true }))); // replacing fits
    assert.equal(ix.get("securityGroup", id("a"))?.stateless, true);
    assert.equal(ix.size, 2);
  });
});

describe("uplink tunnel keys", () => {
  it("are allocated when a router gains an uplink here, kept, released, and restorable", () => {
    const ix = new IntentIndex("east");
    let next = 7;
    const allocate = () => next++;
    const up = b.router("r", { uplinks: [{ site: "east", ipCidr: "198.51.100.2/24" }] });
    const port = uplinkPortId(id("r"), "east");
    const c1 = b.upsert(
      1,
      up,
      b.router("elsewhere", { uplinks: [{ site: "west", ipCidr: "203.0.113.2/24" }] }),
    );
    ix.applyIntentChange(c1);
    assert.deepEqual(ix.syncUplinkTunnelKeys(c1, allocate), [{ portId: port, before: 0, after: 7 }]);
    assert.equal(ix.tunnelKeyOf(port), 7);
    assert.equal(ix.tunnelKeyOf(uplinkPortId(id("elsewhere"), "east")), 0);
    const routerPort = translateAll(ix).objects.find((o) => o.port?.id === port)?.port;
    assert.equal(routerPort?.tunnelKey, 7);
    // An update keeps the key.
    const c2 = b.upsert(2, b.router("r", { uplinks: [{ site: "east", ipCidr: "198.51.100.3/24" }] }));
    ix.applyIntentChange(c2);
    assert.deepEqual(ix.syncUplinkTunnelKeys(c2, allocate), []);
    // Losing the uplink releases it; a failed transaction restores it.
    const c3 = b.upsert(3, b.router("r"));
    ix.applyIntentChange(c3);
    const moves = ix.syncUplinkTunnelKeys(c3, allocate);
    assert.deepEqual(moves, [{ portId: port, before: 7, after: 0 }]);
    assert.equal(ix.tunnelKeyOf(port), 0);
    ix.restoreTunnelKeys(moves);
    assert.equal(ix.tunnelKeyOf(port), 7);
    assert.deepEqual([...ix.tunnelKeys()], [[port, 7]]);
  });
});

describe("overlayView", () => {
  it("translates a pending local port change the same as after applying it", () => {
    const w = new TestWorld("east");
    w.apply(b.upsert(1, b.network("n", { sites: ["east"] }), b.securityGroup("g")));
    const next = b.localPort("vm", {
      network: "n",
      mac: "02:00:00:00:00:09",
      ips: ["10.0.0.9"],
      groups: ["g"],
    });
    const pending = translateLocalPort(
      overlayView(w.index, [{ kind: "localPort", id: next.id, value: next }]),
      next.id,
      undefined,
    );
    assert.deepEqual(w.putPort(next), pending);
  });
});

/** Wraps a view and counts every object it hands out. */
function countingView(inner: IntentView): { view: IntentView; reads: () => number } {
  let n = 0;
  const counted = <T>(it: Iterable<T>): T[] => {
    const xs = [...it];
    n += xs.length;
    return xs;
  };
  const view: IntentView = {
    site: inner.site,
    get: (kind, oid) => {
      n++;
      return inner.get(kind, oid);
    },
    list: (kind) => counted(inner.list(kind)),
    routerInterfacesOfRouter: (x) => counted(inner.routerInterfacesOfRouter(x)),
    routerInterfacesOfNetwork: (x) => counted(inner.routerInterfacesOfNetwork(x)),
    rulesOfGroup: (x) => counted(inner.rulesOfGroup(x)),
    portRecordsOfGroup: (x) => counted(inner.portRecordsOfGroup(x)),
    portRecordsOfNetwork: (x) => counted(inner.portRecordsOfNetwork(x)),
    floatingIpsOfRouter: (x) => counted(inner.floatingIpsOfRouter(x)),
    routersWithUplinkHere: () => counted(inner.routersWithUplinkHere()),
    gatewayHosts: () => counted(inner.gatewayHosts()),
    // Lazily: a profile only asks whether it has a port at all.
    localPortsWithGroups: function* (x) {
      for (const p of inner.localPortsWithGroups(x)) {
        n++;
        yield p;
      }
    },
    tunnelKeyOf: (x) => {
      n++;
      return inner.tunnelKeyOf(x);
    },
  };
  return { view, reads: () => n };
}

describe("cost of a change", () => {
  function worldOfSize(n: number): IntentIndex {
    const ix = new IntentIndex("east");
    const objs: intentpb.IntentObject[] = [
      b.network("net", {
        sites: ["east", "west"],
        subnets: [{ cidr: "10.0.0.0/16", gatewayIp: "10.0.0.1" }],
      }),
    ];
    objs.push(b.router("r", { uplinks: [{ site: "east", ipCidr: "198.51.100.2/24", snat: true }] }));
    objs.push(b.routerInterface("ri", { router: "r", network: "net" }));
    objs.push(b.securityGroup("web"));
    for (let i = 0; i < n; i++) {
      objs.push(b.network(`other${i}`, { sites: ["east"], vni: 0x110000 + i }));
      objs.push(b.securityGroup(`sg${i}`));
      objs.push(
        b.securityGroupRule(`rule${i}`, { group: `sg${i}`, direction: "ingress", remoteGroup: "web" }),
      );
      objs.push(
        b.portRecord(`p${i}`, {
          site: "west",
          network: `other${i}`,
          mac: "02:00:00:00:00:01",
          ips: ["10.9.0.1"],
          groups: [`sg${i}`],
        }),
      );
    }
    ix.applyIntentChange(b.upsert(1, ...objs));
    return ix;
  }

  it("does not grow with the size of the state", () => {
    const reads: number[] = [];
    for (const n of [10, 2000]) {
      const ix = worldOfSize(n);
      const c = countingView(ix);
      let total = 0;
      const changes = [
        b.upsert(
          2,
          b.portRecord("new", {
            site: "west",
            network: "net",
            mac: "02:00:00:00:00:02",
            ips: ["10.0.5.5"],
            groups: ["web"],
          }),
        ),
        b.upsert(
          3,
          b.securityGroupRule("r-new", {
            group: "web",
            direction: "egress",
            protocol: "tcp",
            ports: [443, 443],
          }),
        ),
        b.upsert(
          4,
          b.floatingIp("f", {
            router: "r",
            site: "east",
            externalIp: "198.51.100.9",
            port: "new",
            fixedIp: "10.0.5.5",
          }),
        ),
        b.upsert(5, b.router("r", { uplinks: [{ site: "east", ipCidr: "198.51.100.2/24", snat: false }] })),
      ];
      for (const change of changes) {
        const prior = ix.applyIntentChange(change);
        const before = c.reads();
        const delta = translateChange(c.view, change, prior);
        total += c.reads() - before;
        assert.ok(delta.upserts.length + delta.deletes.length > 0);
      }
      reads.push(total);
    }
    assert.equal(reads[1], reads[0], `view reads per change: ${reads.join(" vs ")}`);
  });
});
