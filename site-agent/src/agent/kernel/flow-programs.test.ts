// Root tests for the kernel fast path's first slice: two VM namespaces whose host-side veths carry
// the TC flow program; flow entries written from Node through the bpfmap addon make the kernel
// forward ARP and ICMP between them with no userspace process in the path.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { NetnsLab, rootSkipReason, sh, type Vm } from "../testing/netns.js";
import { type BpfMap, bpfMapAddonAvailable } from "./bpf-map.js";
import {
  decodeFlowStats,
  encodeFlowKey,
  encodeFlowValue,
  FLOW_KEY_SIZE,
  FLOW_VALUE_SIZE,
  type KernelFlowKey,
} from "./flow-map-codec.js";
import { kernelDatapathUnavailable, TcPrograms } from "./tc-programs.js";

const skip =
  rootSkipReason(["ip", "ping", "tc", "bpftool", "nsenter"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ?? (bpfMapAddonAvailable() ? undefined : "bpfmap addon not built")));
if (skip) console.log(`# skipping kernel datapath tests: ${skip}`);

const ETH_ARP = 0x0806;
const ETH_IP = 0x0800;
const BROADCAST = "ff:ff:ff:ff:ff:ff";
const GW_MAC = "02:00:00:00:07:fe";
/** ICMP echo identifier (part of the kernel key), fixed with `ping -e`. */
const PING_ID = 4242;

function ifindex(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/ifindex`, "utf8").trim());
}

describe("kernel fast path (TC eBPF) between network namespaces", { skip }, () => {
  const lab = new NetnsLab("kd");
  let bpffs: string;
  let progs: TcPrograms;
  let flows: BpfMap;
  let ports: BpfMap;
  let vm1: Vm;
  let vm2: Vm;
  let vm3: Vm;
  let vm4: Vm;

  before(() => {
    bpffs = mkdtempSync(join(tmpdir(), "isthmus-bpffs-"));
    progs = TcPrograms.load({ bpffs, name: "test" });
    flows = progs.openFlowMap();
    vm1 = lab.addVm("02:00:00:00:07:01", "10.79.0.1/24");
    vm2 = lab.addVm("02:00:00:00:07:02", "10.79.0.2/24");
    // A routed pair: each VM's gateway MAC is a static neighbour the flows rewrite away.
    vm3 = lab.addVm("02:00:00:00:07:03", "10.79.1.3/24", "10.79.1.254");
    vm4 = lab.addVm("02:00:00:00:07:04", "10.79.2.4/24", "10.79.2.254");
    for (const [vm, gw] of [
      [vm3, "10.79.1.254"],
      [vm4, "10.79.2.254"],
    ] as const) {
      sh("ip", ["-n", vm.ns, "neigh", "replace", gw, "lladdr", GW_MAC, "dev", "eth0"]);
    }
    // The programs serve only devices registered as ports; misses would go to an upcall device,
    // which this test does not configure (so they are dropped).
    ports = progs.openMap("ports", 4, 16);
    [vm1, vm2, vm3, vm4].forEach((vm, i) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(ifindex(vm.hostIf));
      const v = Buffer.alloc(16);
      v.writeUInt32LE(i + 1);
      ports.update(k, v);
      progs.attach(vm.hostIf, "port_ingress");
    });
  });

  after(() => {
    flows?.close();
    ports?.close();
    progs?.unload();
    lab.cleanup();
    if (bpffs) rmdirSync(bpffs);
  });

  function l2Keys(): { key: KernelFlowKey; out: number }[] {
    const i1 = ifindex(vm1.hostIf);
    const i2 = ifindex(vm2.hostIf);
    return [
      // ARP keys carry the opcode and the sender/target IPs (as the userspace key does).
      {
        key: {
          ifindex: i1,
          ethDst: BROADCAST,
          ethSrc: vm1.mac,
          ethertype: ETH_ARP,
          proto: 1,
          ipSrc: vm1.ip,
          ipDst: vm2.ip,
        },
        out: i2,
      },
      {
        key: {
          ifindex: i1,
          ethDst: vm2.mac,
          ethSrc: vm1.mac,
          ethertype: ETH_ARP,
          proto: 2,
          ipSrc: vm1.ip,
          ipDst: vm2.ip,
        },
        out: i2,
      },
      {
        key: {
          ifindex: i2,
          ethDst: BROADCAST,
          ethSrc: vm2.mac,
          ethertype: ETH_ARP,
          proto: 1,
          ipSrc: vm2.ip,
          ipDst: vm1.ip,
        },
        out: i1,
      },
      {
        key: {
          ifindex: i2,
          ethDst: vm1.mac,
          ethSrc: vm2.mac,
          ethertype: ETH_ARP,
          proto: 2,
          ipSrc: vm2.ip,
          ipDst: vm1.ip,
        },
        out: i1,
      },
      {
        key: {
          ifindex: i1,
          ethDst: vm2.mac,
          ethSrc: vm1.mac,
          ethertype: ETH_IP,
          proto: 1,
          ipSrc: vm1.ip,
          ipDst: vm2.ip,
          sport: 8,
          icmpId: PING_ID,
        },
        out: i2,
      },
      {
        key: {
          ifindex: i2,
          ethDst: vm1.mac,
          ethSrc: vm2.mac,
          ethertype: ETH_IP,
          proto: 1,
          ipSrc: vm2.ip,
          ipDst: vm1.ip,
          sport: 0,
          icmpId: PING_ID,
        },
        out: i1,
      },
    ];
  }

  test("without flows the VMs cannot reach each other (misses with no upcall device are dropped)", async () => {
    const r = await lab.exec(vm1.ns, ["ping", "-c", "1", "-W", "1", vm2.ip]);
    assert.notEqual(r.code, 0, "ping must fail with no flows installed");
  });

  test("L2 redirect flows forward ARP and ICMP in the kernel; counters rise; deleting stops it", async () => {
    const entries = l2Keys().map(({ key, out }) => ({
      key: encodeFlowKey(key),
      value: encodeFlowValue({ action: { kind: "redirect", outIfindex: out } }),
    }));
    assert.equal(flows.updateBatch(entries), entries.length);
    assert.equal(flows.keys().length, entries.length);

    const r = await lab.exec(vm1.ns, [
      "ping",
      "-e",
      String(PING_ID),
      "-c",
      "3",
      "-i",
      "0.2",
      "-W",
      "2",
      vm2.ip,
    ]);
    assert.equal(r.code, 0, `ping failed: ${r.stdout}${r.stderr}`);

    const echo = decodeFlowStats(flows.lookup(entries[4]!.key)!);
    const reply = decodeFlowStats(flows.lookup(entries[5]!.key)!);
    assert.ok(echo.packets >= 3n, `echo request flow counted ${echo.packets}`);
    assert.ok(reply.packets >= 3n, `echo reply flow counted ${reply.packets}`);
    assert.ok(echo.bytes >= echo.packets * 98n, `echo bytes ${echo.bytes}`);
    assert.ok(echo.lastUsedNs > 0n);
    const arp = decodeFlowStats(flows.lookup(entries[0]!.key)!);
    assert.ok(arp.packets >= 1n, "the broadcast ARP request went through its flow");

    // The bulk read the agent syncs counters with: small chunks still meet every entry once, with
    // the same counters a single lookup gives.
    const seen = new Map<string, bigint>();
    const keys = Buffer.alloc(2 * FLOW_KEY_SIZE);
    const values = Buffer.alloc(2 * FLOW_VALUE_SIZE);
    const pos = [Buffer.alloc(8), Buffer.alloc(8)];
    let from: Buffer | null = null;
    for (let round = 0; round < 100; round++) {
      const next = pos[round % 2]!;
      const r = flows.lookupBatch(from, next, keys, values);
      for (let i = 0; i < r.count; i++) {
        const k = keys.subarray(i * FLOW_KEY_SIZE, (i + 1) * FLOW_KEY_SIZE).toString("hex");
        assert.ok(!seen.has(k), "an entry came twice");
        seen.set(k, decodeFlowStats(values.subarray(i * FLOW_VALUE_SIZE, (i + 1) * FLOW_VALUE_SIZE)).packets);
      }
      if (r.done) break;
      from = next;
    }
    assert.equal(seen.size, entries.length);
    assert.equal(
      seen.get(entries[4]!.key.toString("hex")),
      decodeFlowStats(flows.lookup(entries[4]!.key)!).packets,
    );

    for (const e of entries) assert.equal(flows.delete(e.key), true);
    assert.equal(flows.lookup(entries[4]!.key), undefined);
    assert.equal(flows.keys().length, 0);
    const after = await lab.exec(vm1.ns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", vm2.ip]);
    assert.notEqual(after.code, 0, "ping must stop once the flows are deleted");
  });

  test("routed flows rewrite MACs and decrement TTL (checksum stays valid)", async () => {
    const i3 = ifindex(vm3.hostIf);
    const i4 = ifindex(vm4.hostIf);
    const fwd = encodeFlowKey({
      ifindex: i3,
      ethDst: GW_MAC,
      ethSrc: vm3.mac,
      ethertype: ETH_IP,
      proto: 1,
      ipSrc: vm3.ip,
      ipDst: vm4.ip,
      sport: 8,
      icmpId: PING_ID,
    });
    const rev = encodeFlowKey({
      ifindex: i4,
      ethDst: GW_MAC,
      ethSrc: vm4.mac,
      ethertype: ETH_IP,
      proto: 1,
      ipSrc: vm4.ip,
      ipDst: vm3.ip,
      sport: 0,
      icmpId: PING_ID,
    });
    flows.update(
      fwd,
      encodeFlowValue({
        action: { kind: "redirect", outIfindex: i4 },
        setMacs: { dst: vm4.mac, src: GW_MAC },
        decTtl: true,
      }),
    );
    flows.update(
      rev,
      encodeFlowValue({
        action: { kind: "redirect", outIfindex: i3 },
        setMacs: { dst: vm3.mac, src: GW_MAC },
        decTtl: true,
      }),
    );
    try {
      const r = await lab.exec(vm3.ns, [
        "ping",
        "-e",
        String(PING_ID),
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        vm4.ip,
      ]);
      assert.equal(r.code, 0, `routed ping failed: ${r.stdout}${r.stderr}`);
      // The reply left vm4 with TTL 64 and crossed one decrementing hop.
      assert.match(r.stdout, /ttl=63/);
      assert.ok(decodeFlowStats(flows.lookup(fwd)!).packets >= 2n);
    } finally {
      flows.delete(fwd);
      flows.delete(rev);
    }
  });
});
