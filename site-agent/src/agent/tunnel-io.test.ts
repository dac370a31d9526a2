import assert from "node:assert/strict";
import dgram from "node:dgram";
import { test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import { maskFromFields } from "./flow-key.js";
import { MemoryPort } from "./memory-port.js";
import { udpFrame } from "./testing/frames.js";
import { udpBatchAvailable } from "./udp-batch-socket.js";
import { UserspaceDatapath } from "./userspace-datapath.js";
import { type VxlanReceiver, VxlanSocket, vxlanHeader } from "./vxlan-socket.js";

const native = udpBatchAvailable();
const nativeSkip = native || process.env.CI ? false : "native addon not built (npm run build)";

function collector() {
  const got: { vni: number; frame: Buffer; from: string }[] = [];
  const bad: string[] = [];
  let batches = 0;
  let failed = 0;
  const r: VxlanReceiver = {
    packet: (vni, frame, from) =>
      got.push({ vni, frame: Buffer.from(frame), from: `${from.ip}:${from.port}` }),
    bad: (reason) => bad.push(reason),
    batchEnd: () => {
      batches++;
    },
    sendFailed: (n) => {
      failed += n;
    },
  };
  return { r, got, bad, batches: () => batches, failed: () => failed };
}

// The deadline only bounds a failing run (a condition that holds returns at once): generous for a
// loaded 2-core CI machine.
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

for (const io of ["native", "dgram"] as const) {
  test(`${io} VXLAN socket: a burst arrives whole and in order, with the sender's address; garbage is named`, {
    skip: io === "native" ? nativeSkip : false,
  }, async () => {
    const s = new VxlanSocket({ address: "127.0.0.1", port: 0, io });
    assert.equal(s.io, io);
    const c = collector();
    await s.start(c.r);
    const peer = dgram.createSocket("udp4");
    await new Promise<void>((r) => peer.bind(0, "127.0.0.1", () => r()));
    try {
      const n = 300;
      for (let i = 0; i < n; i++) {
        const frame = Buffer.alloc(60 + (i % 7), i & 0xff);
        frame.writeUInt32BE(i, 0);
        peer.send(Buffer.concat([vxlanHeader(0x1000 + i), frame]), s.boundPort, "127.0.0.1");
      }
      peer.send(Buffer.from("0800", "hex"), s.boundPort, "127.0.0.1");
      peer.send(Buffer.concat([Buffer.alloc(8), Buffer.alloc(60)]), s.boundPort, "127.0.0.1");
      await until(() => c.got.length + c.bad.length >= n + 2, "the burst");
      const from = `127.0.0.1:${peer.address().port}`;
      for (let i = 0; i < n; i++) {
        const g = c.got[i]!;
        assert.equal(g.vni, 0x1000 + i);
        assert.equal(g.frame.length, 60 + (i % 7));
        // Each frame is its own bytes, not a later batch's that reused the same slot.
        assert.equal(g.frame.readUInt32BE(0), i);
        assert.equal(g.frame[g.frame.length - 1], i & 0xff);
        assert.equal(g.from, from);
      }
      assert.deepEqual(c.bad.sort(), ["vxlan_no_vni_flag", "vxlan_truncated"]);
      assert.ok(c.batches() >= 1 && c.batches() <= n + 2);
    } finally {
      peer.close();
      await s.close();
    }
  });

  test(`${io} VXLAN socket: sends are RFC 7348 datagrams, payload copied at send time`, {
    skip: io === "native" ? nativeSkip : false,
  }, async () => {
    const s = new VxlanSocket({ address: "127.0.0.1", port: 0, io });
    const c = collector();
    await s.start(c.r);
    const peer = dgram.createSocket("udp4");
    const got: Buffer[] = [];
    peer.on("message", (m) => got.push(m));
    await new Promise<void>((r) => peer.bind(0, "127.0.0.1", () => r()));
    peer.setRecvBufferSize(4 * 1024 * 1024); // the burst must not overflow the receiver
    try {
      const payload = Buffer.alloc(64, 0xab);
      const n = 700; // more than one send table (512) and one sendmmsg chunk (64)
      for (let i = 0; i < n; i++) {
        payload.writeUInt32BE(i, 0);
        s.send(0xabcdef & 0xffffff, payload, "127.0.0.1", peer.address().port);
      }
      payload.fill(0); // a caller reusing its buffer must not change what was sent
      await until(() => got.length >= n, "the datagrams");
      for (let i = 0; i < n; i++) {
        assert.equal(got[i]!.subarray(0, 8).toString("hex"), "08000000abcdef00");
        assert.equal(got[i]!.readUInt32BE(8), i);
        assert.equal(got[i]![8 + 63], 0xab);
      }
      assert.equal(c.failed(), 0);
      s.send(1, payload, "not-an-ip", 1);
      if (io === "native") assert.equal(c.failed(), 1); // refused up front, counted
    } finally {
      peer.close();
      await s.close();
    }
  });
}

test("native and dgram datapaths forward to each other across batches, frames intact", {
  skip: nativeSkip,
}, async () => {
  const mk = (io: "native" | "dgram", ip: string) =>
    new UserspaceDatapath({ tunnelIp: ip, tunnelPort: 0, tunnelIo: io, log: silentLogger() });
  const a = mk("native", "127.0.0.2");
  const b = mk("dgram", "127.0.0.3");
  await a.start();
  await b.start();
  try {
    assert.equal(a.tunnelIo, "native");
    assert.equal(b.tunnelIo, "dgram");
    const pa = new MemoryPort("pa");
    const pb = new MemoryPort("pb");
    a.addPort(1, "port-a", pa);
    b.addPort(1, "port-b", pb);
    a.setTunnelKeyPort(0x21, 1);
    b.setTunnelKeyPort(0x22, 1);
    const mask = maskFromFields(["inPort"]);
    // Port 1 → the other side's key; what arrives with our key goes to port 1 without a flow.
    a.onUpcall(() => ({
      actions: { outputs: [{ kind: "tunnel", key: 0x22, remoteIp: "127.0.0.3", remotePort: b.tunnelPort }] },
      install: { mask, tags: [] },
    }));
    b.onUpcall(() => ({
      actions: { outputs: [{ kind: "tunnel", key: 0x21, remoteIp: "127.0.0.2", remotePort: a.tunnelPort }] },
      install: { mask, tags: [] },
    }));
    const frame = (i: number, from: string, to: string) => {
      const f = udpFrame({
        srcMac: from,
        dstMac: to,
        srcIp: "10.0.0.1",
        dstIp: "10.0.0.2",
        sport: 1000,
        dport: 2000,
      });
      f.writeUInt32BE(i, f.length - 4);
      return f;
    };
    // The first frame each way installs the flow; the rest are hits (all queued as misses at once,
    // they would overflow the per-port upcall queue).
    pa.inject(frame(0, "02:00:00:00:00:0a", "02:00:00:00:00:0b"));
    pb.inject(frame(0, "02:00:00:00:00:0b", "02:00:00:00:00:0a"));
    await pb.waitFor(1);
    await pa.waitFor(1);
    const n = 401;
    for (let i = 1; i < n; i += 50) {
      pa.inject(
        ...Array.from({ length: 50 }, (_, k) => frame(i + k, "02:00:00:00:00:0a", "02:00:00:00:00:0b")),
      );
      pb.inject(
        ...Array.from({ length: 50 }, (_, k) => frame(i + k, "02:00:00:00:00:0b", "02:00:00:00:00:0a")),
      );
    }
    await pb.waitFor(n, 15_000);
    await pa.waitFor(n, 15_000);
    const seq = (p: MemoryPort) => p.received.map((f) => f.readUInt32BE(f.length - 4)).sort((x, y) => x - y);
    assert.deepEqual(
      seq(pb),
      Array.from({ length: n }, (_, i) => i),
    );
    assert.deepEqual(
      seq(pa),
      Array.from({ length: n }, (_, i) => i),
    );
    const sa = a.stats();
    assert.equal(sa.ports.get(1)!.txPackets, n);
    assert.equal(sa.tunnels.get(`127.0.0.3:${b.tunnelPort}`)!.rxPackets, n);
    assert.equal(sa.tunnels.get(`127.0.0.3:${b.tunnelPort}`)!.txPackets, n);
    assert.equal(sa.flowHits, n - 1, "every later frame from the port hits the flow");
    assert.equal(sa.drops.size, 0, `no drops: ${[...sa.drops].join(",")}`);
  } finally {
    await a.stop();
    await b.stop();
  }
});
