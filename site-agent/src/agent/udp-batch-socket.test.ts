import assert from "node:assert/strict";
import { test } from "node:test";
import { RX_META, RX_SLOT, UdpBatchSocket, udpBatchAvailable } from "./udp-batch-socket.js";

const skip = udpBatchAvailable() || process.env.CI ? false : "native addon not built (npm run build)";

interface Got {
  len: number;
  first: number;
  last: number;
  fill: number;
  from: number;
}

function receiver(s: UdpBatchSocket, got: Got[], grouped: { n: number }) {
  return (n: number) => {
    for (let i = 0; i < n; i++) {
      const m = i * RX_META;
      const len = s.rxMeta[m]!;
      const off = s.rxMeta[m + 4]!;
      assert.equal(s.rxMeta[m + 3], 0, "not truncated");
      // A datagram that does not start its slot arrived inside a GRO packet with others.
      if (off % RX_SLOT !== 0) grouped.n++;
      got.push({
        len,
        first: s.rx.readUInt32BE(off),
        last: s.rx[off + len - 1]!,
        fill: s.rx[off + 4]!,
        from: s.rxMeta[m + 2]!,
      });
    }
  };
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

test("udp batch: runs to one peer go out as GSO sends and come back as the same datagrams, in order", {
  skip,
}, async () => {
  const a = new UdpBatchSocket();
  const b = new UdpBatchSocket();
  const c = new UdpBatchSocket();
  const gotB: Got[] = [];
  const gotC: Got[] = [];
  const groupedB = { n: 0 };
  const groupedC = { n: 0 };
  a.open("127.0.0.1", 0, 1 << 22, () => {});
  b.open("127.0.0.1", 0, 1 << 22, receiver(b, gotB, groupedB));
  c.open("127.0.0.1", 0, 1 << 22, receiver(c, gotC, groupedC));
  try {
    const lo = 0x7f000001;
    // To b: a run of 114-byte datagrams cut by a shorter one, a run of 200-byte ones, then
    // single datagrams interleaved with ones to c (each its own message); a run longer than one
    // GSO send (64) as well.
    const plan: { to: UdpBatchSocket; len: number }[] = [];
    for (let i = 0; i < 100; i++) plan.push({ to: b, len: 114 });
    plan.push({ to: b, len: 50 });
    for (let i = 0; i < 20; i++) plan.push({ to: b, len: 200 });
    for (let i = 0; i < 10; i++) plan.push({ to: i % 2 ? b : c, len: 114 });
    for (let i = 0; i < 30; i++) plan.push({ to: c, len: 1400 });
    plan.push({ to: b, len: 1400 }); // larger than the run before it: starts a new message
    const want = new Map<UdpBatchSocket, { len: number; first: number; fill: number }[]>([
      [b, []],
      [c, []],
    ]);
    plan.forEach((p, i) => {
      const off = a.reserve(p.len, lo, p.to.localPort);
      a.arena.fill(i & 0xff, off, off + p.len);
      a.arena.writeUInt32BE(i, off);
      want.get(p.to)!.push({ len: p.len, first: i, fill: i & 0xff });
    });
    a.flush();
    assert.equal(a.failed, 0);
    await until(() => gotB.length >= want.get(b)!.length && gotC.length >= want.get(c)!.length, "all");
    for (const [s, got] of [
      [b, gotB],
      [c, gotC],
    ] as const) {
      const w = want.get(s)!;
      assert.equal(got.length, w.length);
      got.forEach((g, i) => {
        assert.equal(g.len, w[i]!.len, `datagram ${i} length`);
        assert.equal(g.first, w[i]!.first, `datagram ${i} is the one queued in that place`);
        assert.equal(g.fill, w[i]!.fill);
        assert.equal(g.last, w[i]!.fill);
        assert.equal(g.from, a.localPort);
      });
    }
    // On loopback a GSO send reaches a GRO socket as one packet: proof the runs were grouped.
    assert.ok(
      groupedB.n > 0 && groupedC.n > 0,
      `datagrams delivered inside GRO packets: ${groupedB.n}, ${groupedC.n}`,
    );
  } finally {
    a.close();
    b.close();
    c.close();
  }
});
