// A large site built in-process for snapshot measurements and tests: intent shaped like the
// propagation benchmark's bulk state (per 100 objects a network spanning four sites, two groups
// and 97 rules) plus N VM ports in one network and one group, translated by the real translator
// and written through the controller's write path — in a few transactions instead of one per port.
// The ports' PortRecords are in the intent too (as the federation returns them to their site).
import { type intentpb, silentLogger, topologypb } from "@isthmus/schema";
import { ChangeFeed } from "../change-feed.js";
import { TopologyMirror } from "../topology-mirror.js";
import { id, network, portRecord, securityGroup, securityGroupRule } from "../translate/intent-builders.js";
import type { Fixture } from "./controller-fixture.js";

export interface LargeSiteOptions {
  ports: number;
  /** Intent objects besides the ports' network and group (multiple of 100). */
  intentObjects: number;
}

/** Fills the fixture's site ("a") and returns the host the ports are bound to. */
export async function buildLargeSite(f: Fixture, o: LargeSiteOptions): Promise<string> {
  const upserts: intentpb.IntentObject[] = [
    network("snap-net", { sites: ["a"], subnets: [{ cidr: "172.16.0.0/16", gatewayIp: "172.16.0.1" }] }),
    securityGroup("snap-sg"),
  ];
  for (let b = 0; b < o.intentObjects / 100; b++) {
    upserts.push(
      network(`bulk-net-${b}`, { sites: ["a", "b", "c", "d"], vni: 0x100100 + b }),
      securityGroup(`bulk-sg-${b}-0`),
      securityGroup(`bulk-sg-${b}-1`),
    );
    for (let r = 0; r < 97; r++) {
      const p = b * 97 + r;
      upserts.push(
        securityGroupRule(`bulk-rule-${p}`, {
          group: `bulk-sg-${b}-${r % 2}`,
          direction: r % 2 === 0 ? "ingress" : "egress",
          ethertype: "ipv4",
          protocol: "tcp",
          ports: [1 + (p % 65000), 1 + (p % 65000)],
          remoteCidr: `192.168.${(p >> 8) & 255}.${p & 255}/32`,
        }),
      );
    }
  }
  await f.applier.applyChange({ index: 1, upserts, deletes: [] });
  const host = await f.local.registerHost({
    name: "snap-host",
    tunnelIp: "10.9.0.1",
    tunnelPort: 4789,
    role: topologypb.HostRole.HOST_ROLE_HOST,
    wanIp: "",
    wanPort: 0,
  });
  // Ports go into the index directly; one re-translation of everything then writes their
  // topology in one revision (what a port at a time would reach, without 10k transactions).
  const index = f.ctx.index;
  const allocate = f.ctx.keys.begin();
  for (let i = 0; i < o.ports; i++) {
    const n = i + 2;
    index.putLocalPort({
      id: id(`snap-port-${i}`),
      name: `snap-port-${i}`,
      networkId: id("snap-net"),
      hostId: host.id,
      interfaceName: `tap${i}`,
      mac: `02:5e:00:${hex((i >> 16) & 255)}:${hex((i >> 8) & 255)}:${hex(i & 255)}`,
      ips: [`172.16.${(n >> 8) & 255}.${n & 255}`],
      securityGroupIds: [id("snap-sg")],
      tunnelKey: allocate(),
      adminStateUp: true,
    });
  }
  // Each port as the federation hands it back once the site reported it (a PortRecord of this
  // site): what makes it a member of its group's address group, as in the propagation benchmark.
  const records: intentpb.IntentObject[] = [];
  for (const p of index.list("localPort")) {
    records.push(
      portRecord(p.name, { site: "a", network: "snap-net", mac: p.mac, ips: p.ips, groups: ["snap-sg"] }),
    );
  }
  await f.applier.applySnapshot({ index: 2, objects: [...upserts, ...records] });
  return host.id;
}

function hex(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** A change feed and a topology mirror (1 GiB bound, 1 MiB parts) loaded from `f`'s database; logs the load time. */
export async function loadedMirror(f: Fixture): Promise<{ feed: ChangeFeed; mirror: TopologyMirror }> {
  const feed = new ChangeFeed(f.db, { pollMs: 100, ringSize: 1000, batch: 100 }, silentLogger());
  await feed.start();
  const mirror = new TopologyMirror(f.db, feed, { maxBytes: 1 << 30, partBytes: 1 << 20 }, silentLogger());
  const t = performance.now();
  await mirror.start();
  console.log(`mirror loaded in ${(performance.now() - t).toFixed(0)} ms`);
  return { feed, mirror };
}
