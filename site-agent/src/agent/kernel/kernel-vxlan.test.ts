// Root test for the kernel fast path across hosts: two "host" namespaces joined by an underlay veth,
// each with an external-mode (collect_md) VXLAN device carrying vxlan_ingress and a VM port carrying
// port_ingress, each host with its own loaded programs and maps (as each agent will have).
import assert from "node:assert/strict";
import { mkdtempSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NetnsLab, rootSkipReason, sh, type Vm } from "../testing/netns.js";
import { type BpfMap, bpfMapAddonAvailable } from "./bpf-map.js";
import { decodeFlowStats, encodeFlowKey, encodeFlowValue } from "./flow-map-codec.js";
import { TUNNEL_PORT_PEER } from "./kernel-flow.js";
import { kernelDatapathUnavailable, TcPrograms } from "./tc-programs.js";

const skip =
  rootSkipReason(["ip", "ping", "tc", "bpftool", "nsenter"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ?? (bpfMapAddonAvailable() ? undefined : "bpfmap addon not built")));
if (skip) console.log(`# skipping kernel VXLAN datapath tests: ${skip}`);

// A global-range key: the receiving host looks it up in its flow map (intra-site keys would be
// delivered by the tunnel_ports map instead, which the second test covers).
const VNI = 0x107707;
const PING_ID = 4343;

function nsPath(ns: string): string {
  return `/run/netns/${ns}`;
}

/** The TX packet count of `name` in `ns` (what it transmitted, as `ip -s` reports it). */
function txPacketsIn(ns: string, name: string): number {
  const out = sh("nsenter", [`--net=${nsPath(ns)}`, "ip", "-s", "-j", "link", "show", "dev", name]);
  return (JSON.parse(out) as { stats64: { tx: { packets: number } } }[])[0]!.stats64.tx.packets;
}

function ifindexIn(ns: string, name: string): number {
  const out = sh("nsenter", [`--net=${nsPath(ns)}`, "ip", "-o", "link", "show", "dev", name]);
  return Number(out.split(":")[0]);
}

describe("kernel fast path over external-mode VXLAN between two host namespaces", { skip }, () => {
  const lab = new NetnsLab("kx");
  const hosts: { ns: string; underlay: string; vm: Vm; progs: TcPrograms; flows: BpfMap; bpffs: string }[] =
    [];

  before(() => {
    const hA = lab.addNamespace();
    const hB = lab.addNamespace();
    sh("ip", ["-n", hA, "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", hB]);
    const vms = [
      lab.addVm("02:00:00:00:08:01", "10.80.0.1/24"),
      lab.addVm("02:00:00:00:08:02", "10.80.0.2/24"),
    ];
    // Static neighbours: this test is about the tunnel, not ARP.
    sh("ip", ["-n", vms[0]!.ns, "neigh", "replace", vms[1]!.ip, "lladdr", vms[1]!.mac, "dev", "eth0"]);
    sh("ip", ["-n", vms[1]!.ns, "neigh", "replace", vms[0]!.ip, "lladdr", vms[0]!.mac, "dev", "eth0"]);
    [hA, hB].forEach((ns, i) => {
      const vm = vms[i]!;
      sh("ip", ["-n", ns, "addr", "add", `192.168.80.${i + 1}/24`, "dev", "ul0"]);
      sh("ip", ["-n", ns, "link", "set", "ul0", "up"]);
      sh("ip", ["-n", ns, "link", "add", "vx0", "type", "vxlan", "external", "dstport", "4789"]);
      sh("ip", ["-n", ns, "link", "set", "vx0", "up"]);
      sh("ip", ["link", "set", vm.hostIf, "netns", ns]);
      sh("ip", ["-n", ns, "link", "set", vm.hostIf, "up"]);
      const bpffs = mkdtempSync(join(tmpdir(), "isthmus-bpffs-"));
      const progs = TcPrograms.load({ bpffs, name: `host${i}` });
      hosts.push({ ns, underlay: `192.168.80.${i + 1}`, vm, progs, flows: progs.openFlowMap(), bpffs });
      const ports = progs.openMap("ports", 4, 16);
      for (const [dev, portNo] of [
        [vm.hostIf, 1],
        ["vx0", 0],
      ] as const) {
        const k = Buffer.alloc(4);
        k.writeUInt32LE(ifindexIn(ns, dev));
        const v = Buffer.alloc(16);
        v.writeUInt32LE(portNo);
        ports.update(k, v);
      }
      ports.close();
      progs.attach(vm.hostIf, "port_ingress", nsPath(ns));
      progs.attach("vx0", "vxlan_ingress", nsPath(ns));
    });
  });

  after(() => {
    for (const h of hosts) {
      h.flows.close();
      h.progs.unload();
      rmdirSync(h.bpffs);
    }
    lab.cleanup();
  });

  test("ICMP crosses the tunnel in the kernel both ways; counters rise on both hosts", async () => {
    const [a, b] = [hosts[0]!, hosts[1]!];
    const installed: { h: (typeof hosts)[number]; key: Buffer }[] = [];
    for (const [src, dst, type] of [
      [a, b, 8],
      [b, a, 0],
    ] as const) {
      const base = {
        ethDst: dst.vm.mac,
        ethSrc: src.vm.mac,
        ethertype: 0x0800,
        proto: 1,
        ipSrc: src.vm.ip,
        ipDst: dst.vm.ip,
        sport: type,
        icmpId: PING_ID,
      };
      const out = encodeFlowKey({ ...base, ifindex: ifindexIn(src.ns, src.vm.hostIf) });
      src.flows.update(
        out,
        encodeFlowValue({
          action: { kind: "tunnel", outIfindex: ifindexIn(src.ns, "vx0"), vni: VNI, remote: dst.underlay },
        }),
      );
      const inn = encodeFlowKey({ ...base, ifindex: ifindexIn(dst.ns, "vx0"), tunId: VNI });
      dst.flows.update(
        inn,
        encodeFlowValue({ action: { kind: "redirect", outIfindex: ifindexIn(dst.ns, dst.vm.hostIf) } }),
      );
      installed.push({ h: src, key: out }, { h: dst, key: inn });
    }
    const r = await lab.exec(a.vm.ns, [
      "ping",
      "-e",
      String(PING_ID),
      "-c",
      "3",
      "-i",
      "0.2",
      "-W",
      "2",
      b.vm.ip,
    ]);
    assert.equal(r.code, 0, `ping over VXLAN failed: ${r.stdout}${r.stderr}`);
    for (const { h, key } of installed) {
      assert.ok(decodeFlowStats(h.flows.lookup(key)!).packets >= 3n, `flow in ${h.ns} was not hit`);
    }
    for (const { h, key } of installed) h.flows.delete(key);
    const after = await lab.exec(a.vm.ns, ["ping", "-e", String(PING_ID), "-c", "1", "-W", "1", b.vm.ip]);
    assert.notEqual(after.code, 0, "ping must stop once the flows are deleted");
  });

  test("intra-site keys are delivered through the tunnel_ports map without a flow lookup", async () => {
    const [a, b] = [hosts[0]!, hosts[1]!];
    const LOCAL = 0x7707;
    const cleanup: (() => void)[] = [];
    for (const [src, dst, type] of [
      [a, b, 8],
      [b, a, 0],
    ] as const) {
      const out = encodeFlowKey({
        ifindex: ifindexIn(src.ns, src.vm.hostIf),
        ethDst: dst.vm.mac,
        ethSrc: src.vm.mac,
        ethertype: 0x0800,
        proto: 1,
        ipSrc: src.vm.ip,
        ipDst: dst.vm.ip,
        sport: type,
        icmpId: PING_ID,
      });
      src.flows.update(
        out,
        encodeFlowValue({
          action: { kind: "tunnel", outIfindex: ifindexIn(src.ns, "vx0"), vni: LOCAL, remote: dst.underlay },
        }),
      );
      const tp = dst.progs.openMap("tunnel_ports", 4, 4);
      const k = Buffer.alloc(4);
      k.writeUInt32LE(LOCAL);
      const v = Buffer.alloc(4);
      // Host A's port is flagged as a veth with its VM on the other end: delivered with
      // redirect_peer (onto the VM's eth0 without the host side transmitting); B's is not.
      const peer = dst === a ? TUNNEL_PORT_PEER : 0;
      v.writeUInt32LE((ifindexIn(dst.ns, dst.vm.hostIf) | peer) >>> 0);
      tp.update(k, v);
      cleanup.push(() => {
        src.flows.delete(out);
        tp.delete(k);
        tp.close();
      });
    }
    try {
      const txA = txPacketsIn(a.ns, a.vm.hostIf);
      const txB = txPacketsIn(b.ns, b.vm.hostIf);
      const r = await lab.exec(a.vm.ns, [
        "ping",
        "-e",
        String(PING_ID),
        "-c",
        "4",
        "-i",
        "0.1",
        "-W",
        "2",
        b.vm.ip,
      ]);
      assert.equal(r.code, 0, `ping over intra-site keys failed: ${r.stdout}${r.stderr}`);
      const st = b.progs.openStatsMap();
      const k = Buffer.alloc(4);
      k.writeUInt32LE(5); // ST_TUNNEL_DELIVER
      const perCpu = st.lookup(k)!;
      let delivered = 0n;
      for (let off = 0; off < perCpu.length; off += 8) delivered += perCpu.readBigUInt64LE(off);
      assert.ok(delivered >= 4n, "delivered by key on host B");
      st.close();
      assert.ok(
        txPacketsIn(b.ns, b.vm.hostIf) - txB >= 4,
        "B's port transmitted the requests (bpf_redirect)",
      );
      // Not the 4 replies; a stray frame of the host's own (a neighbour probe) may pass there.
      assert.ok(
        txPacketsIn(a.ns, a.vm.hostIf) - txA <= 1,
        "A's VM got its replies past its port's transmit (redirect_peer)",
      );
    } finally {
      for (const c of cleanup) c();
    }
  });
});
