// Incremental translation must equal a full translation after every change, on random
// federations built from small pools of names (so references collide, dangle and move).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { intentpb } from "@isthmus/schema";
import * as b from "./intent-builders.js";
import { TestWorld } from "./test-world.js";
import { translateAll } from "./translate.js";
import type { TopologyDelta } from "./view.js";

/** Small seeded PRNG (mulberry32): the same seed gives the same federation. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SITES = ["east", "west", "north"];
const KINDS = [
  "network",
  "router",
  "routerInterface",
  "securityGroup",
  "securityGroupRule",
  "floatingIp",
  "portRecord",
  "gateway",
] as const;

type Op =
  | { t: "intent"; change: intentpb.IntentChange }
  | { t: "putPort"; port: ReturnType<typeof b.localPort> }
  | { t: "removePort"; name: string }
  | { t: "putHost"; host: ReturnType<typeof b.host> }
  | { t: "removeHost"; name: string };

function randomOps(seed: number, count: number): Op[] {
  const rnd = prng(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const some = <T>(xs: readonly T[]): T[] => xs.filter(() => rnd() < 0.4);
  const name = (prefix: string, n: number): string => `${prefix}${int(n)}`;
  const mac = (): string => `02:00:00:00:00:${int(12).toString(16).padStart(2, "0")}`;
  const ip = (): string => `10.${int(3)}.0.${2 + int(6)}`;

  const object = (kind: (typeof KINDS)[number]): intentpb.IntentObject => {
    switch (kind) {
      case "network": {
        const k = int(3);
        return b.network(name("n", 3), {
          sites: SITES.filter(() => rnd() < 0.6),
          subnets:
            rnd() < 0.9 ? [{ cidr: `10.${k}.0.0/24`, gatewayIp: rnd() < 0.8 ? `10.${k}.0.1` : "" }] : [],
          vni: rnd() < 0.95 ? 0x100000 + int(5) : 5,
        });
      }
      case "router":
        return b.router(name("r", 3), {
          uplinks: some(SITES).map((site, i) => ({
            site,
            ipCidr: rnd() < 0.95 ? `198.51.${i}.2/24` : "bogus",
            gatewayIp: rnd() < 0.8 ? `198.51.${i}.1` : "",
            snat: rnd() < 0.5,
          })),
          routes: Array.from({ length: int(3) }, () => ({
            destination: `172.16.${int(3)}.0/24`,
            nextHop: rnd() < 0.5 ? `10.${int(3)}.0.254` : "198.51.0.9",
            blackhole: rnd() < 0.2,
            site: rnd() < 0.5 ? "" : pick(SITES),
          })),
          transitVni: 0x200000 + int(3),
        });
      case "routerInterface":
        return b.routerInterface(name("ri", 6), {
          router: name("r", 3),
          network: name("n", 3),
          ip: rnd() < 0.5 ? "" : ip(),
        });
      case "securityGroup":
        return b.securityGroup(name("sg", 3), { stateless: rnd() < 0.3 });
      case "securityGroupRule":
        return b.securityGroupRule(name("rule", 8), {
          group: name("sg", 3),
          direction: rnd() < 0.5 ? "ingress" : "egress",
          protocol: pick(["any", "tcp", "udp", "icmp", "17", "bogus"]),
          ports: rnd() < 0.5 ? [int(100), 100 + int(100)] : [0, 0],
          ...(rnd() < 0.4
            ? { remoteGroup: name("sg", 4) }
            : rnd() < 0.5
              ? { remoteCidr: `10.${int(3)}.0.0/16` }
              : {}),
        });
      case "floatingIp":
        return b.floatingIp(name("f", 4), {
          router: name("r", 3),
          site: pick(SITES),
          externalIp: `198.51.0.${10 + int(5)}`,
          ...(rnd() < 0.7 ? { port: name("p", 6), fixedIp: ip() } : {}),
        });
      case "portRecord":
        return b.portRecord(name("p", 8), {
          site: pick(SITES),
          network: name("n", 3),
          mac: rnd() < 0.95 ? mac() : "ff:ff:ff:ff:ff:ff",
          ips: Array.from({ length: int(3) }, ip),
          groups: some(["sg0", "sg1", "sg2"]),
        });
      case "gateway":
        return b.gateway(name("g", 3), {
          site: pick(SITES),
          endpoints: Array.from({ length: 1 + int(2) }, () => ({ ip: `203.0.113.${int(4)}` })),
        });
    }
  };

  const ops: Op[] = [];
  for (let i = 1; i <= count; i++) {
    const r = rnd();
    if (r < 0.55) {
      const n = 1 + int(3);
      ops.push({ t: "intent", change: b.upsert(i, ...Array.from({ length: n }, () => object(pick(KINDS)))) });
    } else if (r < 0.7) {
      const kind = pick(KINDS);
      const prefix = {
        network: "n",
        router: "r",
        routerInterface: "ri",
        securityGroup: "sg",
        securityGroupRule: "rule",
        floatingIp: "f",
        portRecord: "p",
        gateway: "g",
      }[kind];
      const change = b.remove(i, kind, name(prefix, 8));
      if (rnd() < 0.3) change.upserts.push(object(pick(KINDS)));
      ops.push({ t: "intent", change });
    } else if (r < 0.82) {
      ops.push({
        t: "putPort",
        port: b.localPort(name("l", 5), {
          network: name("n", 3),
          host: name("h", 3),
          mac: rnd() < 0.95 ? mac() : "nonsense",
          ips: Array.from({ length: int(3) }, ip),
          groups: some(["sg0", "sg1", "sg2", "sg9"]),
          tunnelKey: 1 + int(5),
        }),
      });
    } else if (r < 0.87) {
      ops.push({ t: "removePort", name: name("l", 5) });
    } else if (r < 0.96) {
      ops.push({ t: "putHost", host: b.host(name("h", 4), { gateway: rnd() < 0.6, alive: rnd() < 0.7 }) });
    } else {
      ops.push({ t: "removeHost", name: name("h", 4) });
    }
  }
  return ops;
}

function run(w: TestWorld, op: Op): TopologyDelta {
  switch (op.t) {
    case "intent":
      return w.apply(op.change);
    case "putPort":
      return w.putPort(op.port);
    case "removePort":
      return w.removePort(b.id(op.name));
    case "putHost":
      return w.putHost(op.host);
    case "removeHost":
      return w.removeHost(b.id(op.name));
  }
}

describe("incremental translation", () => {
  for (const seed of [1, 2, 3, 4]) {
    for (const site of ["east", "west"]) {
      it(`equals a full translation after every change (seed ${seed}, site ${site})`, () => {
        const w = new TestWorld(site);
        let nonEmpty = 0;
        randomOps(seed, 250).forEach((op, i) => {
          run(w, op);
          w.assertMatchesFull(`after op ${i} (${op.t})`);
          if (w.topology.size > 0) nonEmpty++;
        });
        assert.ok(nonEmpty > 100, "the random federation actually derived topology");
        assert.ok(w.all("rule").length > 0 && w.all("route").length > 0 && w.all("macEntry").length > 0);
      });
    }
  }

  it("is deterministic: two runs of the same changes give identical deltas and topology", () => {
    const ops = randomOps(42, 200);
    const a = new TestWorld("east");
    const c = new TestWorld("east");
    for (const op of ops) assert.deepEqual(run(a, op), run(c, op));
    assert.deepEqual(translateAll(a.index), translateAll(c.index));
  });

  it("deleting everything removes everything that was derived", () => {
    const w = new TestWorld("east");
    for (const op of randomOps(7, 200)) run(w, op);
    assert.ok(w.topology.size > 0);
    let index = 1000;
    for (const kind of KINDS) {
      for (const o of [...w.index.list(kind)]) {
        w.apply({
          index: index++,
          upserts: [],
          deletes: [{ kind: kindNumber(kind), id: o.meta!.id, name: "" }],
        });
      }
    }
    for (const p of [...w.index.list("localPort")]) w.removePort(p.id);
    for (const h of [...w.index.list("host")]) w.removeHost(h.id);
    assert.equal(w.topology.size, 0);
    assert.equal(w.index.size, 0);
  });
});

function kindNumber(kind: (typeof KINDS)[number]): intentpb.ObjectKind {
  return b.remove(0, kind, "x").deletes[0]!.kind;
}
