// The upcall ring buffer: a miss reaches the reader as one record with its ingress port and the
// frame (checksums finished), and a ring nobody reads fills, after which misses are dropped and
// counted, not queued without bound; with busy polling on, a miss opens a window in which the
// next miss is read without the event loop blocking, and the window closes again when no miss
// comes. Root tests (a VM namespace whose host side carries the programs); the checksum completion
// is also checked on its own.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { checksumsValid, tcpFrame, udpFrame } from "../testing/frames.js";
import { NetnsLab, rootSkipReason, sh, type Vm } from "../testing/netns.js";
import { type BpfMap, bpfMapAddonAvailable } from "./bpf-map.js";
import { kernelDatapathUnavailable, possibleCpus, TcPrograms } from "./tc-programs.js";
import { threadScheduling } from "./thread-slice.js";
import { parseUpcall } from "./upcall-frame.js";
import {
  finishRingChecksum,
  RING_FRAME_MAX,
  UpcallRing,
  type UpcallRingStats,
  upcallRingAvailable,
} from "./upcall-ring.js";

const addonSkip = upcallRingAvailable() ? false : "upcallring addon not built";
const skip =
  rootSkipReason(["ip", "ping", "tc", "bpftool", "nsenter"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ??
      (bpfMapAddonAvailable() && !addonSkip ? undefined : "addons not built")));
if (skip) console.log(`# skipping upcall ring tests: ${skip}`);

const ST_UPCALL = 1;
const ST_RING_UPCALL = 12;
const ST_RING_FULL = 13;

function ifindex(name: string): number {
  return Number(readFileSync(`/sys/class/net/${name}/ifindex`, "utf8").trim());
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("the ring reader finishes TCP and UDP checksums a VM left for offload", { skip: addonSkip }, () => {
  const f = {
    srcMac: "02:00:00:00:0a:01",
    dstMac: "02:00:00:00:0a:02",
    srcIp: "10.1.0.1",
    dstIp: "10.1.0.2",
  };
  for (const frame of [
    tcpFrame({ ...f, sport: 40000, dport: 22, flags: 0x02 }),
    udpFrame({ ...f, sport: 40000, dport: 53 }),
  ]) {
    const valid = Buffer.from(frame);
    const at = 14 + 20 + (frame[23] === 6 ? 16 : 6);
    // CHECKSUM_PARTIAL leaves the pseudo-header sum in the field; anything else is as wrong.
    frame.writeUInt16BE(0x1234, at);
    assert.equal(checksumsValid(frame), false);
    finishRingChecksum(frame);
    assert.deepEqual(frame, valid);
    finishRingChecksum(frame); // a finished checksum stays as it is
    assert.deepEqual(frame, valid);
  }
  // A UDP datagram without a checksum (0 over IPv4) keeps none.
  const none = udpFrame({ ...f, sport: 1, dport: 2 });
  none.writeUInt16BE(0, 14 + 20 + 6);
  finishRingChecksum(none);
  assert.equal(none.readUInt16BE(14 + 20 + 6), 0);
});

describe("upcall ring buffer (TC eBPF → agent)", { skip }, () => {
  const lab = new NetnsLab("kr");
  let bpffs: string;
  let progs: TcPrograms;
  let config: BpfMap;
  let stats: BpfMap;
  let vm: Vm;
  const cpus = possibleCpus();
  const PORT_NO = 7;

  const counter = (idx: number): number => {
    const k = Buffer.alloc(4);
    k.writeUInt32LE(idx);
    const v = stats.lookup(k);
    let sum = 0;
    for (let c = 0; v && c < cpus; c++) sum += Number(v.readBigUInt64LE(c * 8));
    return sum;
  };

  before(() => {
    bpffs = mkdtempSync(join(tmpdir(), "isthmus-bpffs-"));
    progs = TcPrograms.load({ bpffs, name: "ringtest" });
    vm = lab.addVm("02:00:00:00:0b:01", "10.78.0.1/24");
    // Only the test's traffic: no IPv6 chatter, and a static neighbour so no ARP goes first.
    sh("ip", ["netns", "exec", vm.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    sh("ip", ["-n", vm.ns, "neigh", "replace", "10.78.0.2", "lladdr", "02:00:00:00:0b:02", "dev", "eth0"]);
    // Room for frames longer than a ring record (both ends: veth checks the receiver's MTU).
    sh("ip", ["-n", vm.ns, "link", "set", "eth0", "mtu", "2000"]);
    sh("ip", ["link", "set", vm.hostIf, "mtu", "2000"]);
    const ports = progs.openMap("ports", 4, 16);
    const k = Buffer.alloc(4);
    k.writeUInt32LE(ifindex(vm.hostIf));
    const v = Buffer.alloc(16);
    v.writeUInt32LE(PORT_NO);
    ports.update(k, v);
    ports.close();
    // Ring on; the upcall "device" is the loopback (only frames too big for a record go there);
    // the limiter lets everything through (1 ns per upcall, a burst far beyond the test).
    config = progs.openMap("config", 4, 32);
    const cfg = Buffer.alloc(32);
    cfg.writeUInt32LE(1, 0);
    cfg.writeBigUInt64LE(1n, 8);
    cfg.writeBigUInt64LE(1_000_000_000n, 16);
    cfg.writeUInt32LE(1, 24);
    config.update(Buffer.alloc(4), cfg);
    stats = progs.openStatsMap(cpus);
    progs.attach(vm.hostIf, "port_ingress");
  });

  after(() => {
    config?.close();
    stats?.close();
    progs?.unload();
    lab.cleanup();
    if (bpffs) rmdirSync(bpffs);
  });

  test("a miss reaches the reader as one record with its ingress port and the whole frame", async () => {
    const ring = new UpcallRing(join(progs.pinDir, "maps", "upcall_ring"));
    const got: Buffer[] = [];
    ring.start((bufs) => got.push(...bufs));
    try {
      const before = counter(ST_RING_UPCALL);
      // UDP from the VM: its veth leaves the checksum to offload (CHECKSUM_PARTIAL).
      await lab.exec(vm.ns, [
        process.execPath,
        "-e",
        `const s = require("node:dgram").createSocket("udp4");
         s.send(Buffer.alloc(100, 7), 4242, "10.78.0.2", () => s.close());`,
      ]);
      await until("the datagram's record", () =>
        got.some((b) => {
          const u = parseUpcall(Buffer.from(b));
          return !("drop" in u) && u.vnetFrame.readUInt16BE(10 + 12) === 0x0800;
        }),
      );
      const udp = got
        .map((b) => parseUpcall(b))
        .flatMap((u) => ("drop" in u ? [] : [u]))
        .find((u) => u.vnetFrame.readUInt16BE(10 + 12) === 0x0800)!;
      assert.equal(udp.meta.portNo, PORT_NO, "the ingress port number");
      assert.equal(udp.meta.reason, 1, "a miss");
      assert.ok(udp.meta.missNs > 0n);
      const frame = udp.vnetFrame.subarray(10);
      assert.equal(frame.length, 14 + 20 + 8 + 100, "the whole frame");
      assert.equal(frame.subarray(6, 12).toString("hex"), "020000000b01", "the VM's source MAC");
      assert.equal(frame.readUInt16BE(14 + 20 + 2), 4242);
      assert.ok(checksumsValid(frame), "checksums finished by the reader");
      assert.ok(counter(ST_RING_UPCALL) > before, "counted as a ring upcall");
      assert.equal(ring.stats().malformed, 0);
    } finally {
      ring.close();
    }
  });

  /** Sends `n` UDP datagrams from the VM, `gapMs` apart (one process, so the gaps are its own). */
  const sendFromVm = async (n: number, gapMs: number, port: number) => {
    const r = await lab.exec(vm.ns, [
      process.execPath,
      "-e",
      `const s = require("node:dgram").createSocket("udp4");
       let i = 0;
       const next = () => (i++ < ${n} ? s.send(Buffer.alloc(64), ${port} + i, "10.78.0.2", () => setTimeout(next, ${gapMs})) : s.close());
       next();`,
    ]);
    assert.equal(r.code, 0, r.stderr);
  };

  test("busy polling off (the default): no window opens, every record comes by a wake-up", async () => {
    const ring = new UpcallRing(join(progs.pinDir, "maps", "upcall_ring"));
    let n = 0;
    ring.start((bufs) => {
      n += bufs.length;
    });
    try {
      await sendFromVm(3, 5, 6000);
      await until("three records", () => n >= 3);
      const st = ring.stats();
      assert.equal(st.busyPollUs, 0);
      assert.equal(st.polling, false);
      assert.equal(st.pollWindows, 0);
      assert.equal(st.pollTurns, 0);
      assert.equal(st.pollMs, 0);
      assert.equal(st.recordsPolled, 0);
      assert.equal(st.recordsWoken, n);
    } finally {
      ring.close();
    }
  });

  test("busy polling: a miss opens the window, a miss inside it is read without a wake-up, and the loop blocks again once it passes", async () => {
    const ring = new UpcallRing(join(progs.pinDir, "maps", "upcall_ring"));
    const WINDOW_US = 300_000;
    // Per batch: how many records, and whether the reader says it was read by polling.
    const batches: { n: number; polled: number }[] = [];
    const records = () => batches.reduce((a, b) => a + b.n, 0);
    ring.start((bufs) => batches.push({ n: bufs.length, polled: ring.times[3]! }));
    try {
      // A 20 ms pause after a preemption; polling at SCHED_FIFO 1 so that on a busy machine other
      // tasks rarely take this thread's CPU in the middle of a window.
      ring.setBusyPoll(WINDOW_US, 20_000, 1);
      const idle = ring.stats();
      assert.equal(idle.busyPollUs, WINDOW_US);
      assert.equal(idle.polling, false, "no window before the first miss");
      assert.equal(idle.pollTurns, 0);
      // Two misses 2 ms apart: the first wakes the reader and opens the window (300 ms), the
      // second falls inside it. On a busy machine the test's thread may lose its CPU while it
      // polls, which ends the window (and pauses polling for 20 ms), or wake only after both have
      // come: then the pair is sent again.
      let caught = false;
      for (let attempt = 0; attempt < 10 && !caught; attempt++) {
        const before = ring.stats();
        const seen = records();
        const firstBatch = batches.length;
        await sendFromVm(2, 2, 6100 + 10 * attempt);
        await until("two records", () => records() >= seen + 2);
        const after = ring.stats();
        assert.equal(after.recordsWoken - before.recordsWoken >= 1, true, "the first miss woke the loop");
        assert.equal(after.pollWindows - before.pollWindows >= 1, true, "the first miss opened a window");
        caught = after.recordsPolled > before.recordsPolled;
        if (caught) {
          assert.deepEqual(
            batches.slice(firstBatch).map((b) => b.polled),
            [0, 1],
            "the reader marks the polled batch (the flow-setup profile's `polled`)",
          );
          assert.ok(after.pollTurns > before.pollTurns, "the loop turned without blocking");
        } else {
          // Not polled: either the thread lost its CPU in the window, or it woke so late (a loaded
          // machine) that both misses were already waiting and came in the first, woken batch.
          const got = batches.slice(firstBatch);
          assert.ok(
            after.pollPreempted > before.pollPreempted || (got.length === 1 && got[0]!.n === 2),
            `a miss not polled in a window was neither preempted nor read with the first: ${JSON.stringify(got)}`,
          );
          await new Promise((r) => setTimeout(r, 50)); // past the pause
        }
      }
      assert.ok(caught, "a miss inside the window was read by polling");
      await until("the window to close", () => !ring.stats().polling, 10_000);
      const closed = ring.stats();
      assert.ok(closed.pollMs > 0, "the time polling is counted");
      // Idle: the loop blocks in epoll again, so nothing polls and the counters stand still.
      await new Promise((r) => setTimeout(r, 200));
      const later = ring.stats();
      assert.equal(later.polling, false);
      assert.equal(later.pollTurns, closed.pollTurns, "no polling while idle");
      assert.equal(later.pollMs, closed.pollMs, "no polling time while idle");
      // The next miss after the window is a wake-up again, and opens another window.
      await sendFromVm(1, 0, 6300);
      await until("the next record", () => ring.stats().recordsWoken === later.recordsWoken + 1);
      assert.equal(ring.stats().pollWindows, later.pollWindows + 1);
      // Turning it off closes the open window on the loop's next turn.
      ring.setBusyPoll(0);
      await until("the window closed by setBusyPoll(0)", () => !ring.stats().polling, 5_000);
    } finally {
      ring.close();
    }
  });

  test("busy polling: a thread that loses its CPU while polling ends the window and pauses polling", async () => {
    // The reader in a child process, stopped (SIGSTOP) while it polls: on SIGCONT its clock has
    // jumped, as after any preemption. It answers each line on stdin with its stats.
    const script = `
      import { UpcallRing } from ${JSON.stringify(new URL("./upcall-ring.js", import.meta.url).href)};
      const ring = new UpcallRing(${JSON.stringify(join(progs.pinDir, "maps", "upcall_ring"))});
      ring.start(() => {});
      // A 5 s pause after a preemption; polling at SCHED_FIFO 1, so on a busy machine no other
      // task preempts the child before the test stops it.
      ring.setBusyPoll(500_000, 5_000_000, 1);
      process.stdin.on("data", () => process.stdout.write(JSON.stringify(ring.stats()) + "\\n"));
      process.stdout.write("ready\\n");`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const lines: string[] = [];
    let buf = "";
    child.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      let i = buf.indexOf("\n");
      while (i >= 0) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        i = buf.indexOf("\n");
      }
    });
    // A sender in the VM started beforehand, so a miss follows a line on its stdin at once: one
    // datagram from a new source port per line.
    const sender = spawn(
      "ip",
      [
        "netns",
        "exec",
        vm.ns,
        process.execPath,
        "-e",
        `const s = require("node:dgram").createSocket("udp4");
         let port = 6400;
         process.stdin.on("data", () => s.send(Buffer.alloc(64), port++, "10.78.0.2"));`,
      ],
      { stdio: ["pipe", "ignore", "inherit"] },
    );
    const send = () => sender.stdin.write("\n");
    const stats = async (): Promise<UpcallRingStats> => {
      const n = lines.length;
      child.stdin.write("\n");
      await until("the child's stats", () => lines.length > n);
      return JSON.parse(lines[n]!) as UpcallRingStats;
    };
    try {
      await until("the child reading the ring", () => lines.includes("ready"));
      lines.length = 0;
      // A miss opens a window (0.5 s). Should the child still lose its CPU before it is stopped
      // (an interrupt storm, the host), the window ends by itself: then wait out the pause and
      // open another.
      let s = await stats();
      for (let attempt = 0; attempt < 10 && !s.polling; attempt++) {
        if (attempt > 0) await new Promise((r) => setTimeout(r, 5_100)); // the pause over
        const windows = s.pollWindows;
        send();
        for (let i = 0; i < 100 && s.pollWindows === windows; i++) s = await stats();
        assert.equal(s.pollWindows, windows + 1, "the miss opened a window");
      }
      assert.equal(s.polling, true, "a window open");
      const preempted = s.pollPreempted;
      // The child notices the jump in its spin; stopped elsewhere in its loop's turn (answering
      // us), it does not: then stop it again.
      for (let i = 0; i < 10 && s.polling; i++) {
        child.kill("SIGSTOP");
        await new Promise((r) => setTimeout(r, 30));
        child.kill("SIGCONT");
        s = await stats();
      }
      assert.equal(s.pollPreempted, preempted + 1, "the jump ended the window");
      assert.equal(s.polling, false, "the loop sleeps again");
      // Within the pause a miss is read after a wake-up and opens no window.
      const { recordsWoken, pollWindows } = s;
      send();
      for (let i = 0; i < 100 && s.recordsWoken === recordsWoken; i++) s = await stats();
      assert.equal(s.recordsWoken, recordsWoken + 1, "read after a wake-up");
      assert.equal(s.pollWindows, pollWindows, "no window during the pause");
      assert.equal(s.polling, false);
    } finally {
      child.kill("SIGKILL");
      sender.kill("SIGKILL");
    }
  });

  test("busy polling at a real-time priority: SCHED_FIFO while a window is open, the thread's own scheduling back after", async () => {
    const ring = new UpcallRing(join(progs.pinDir, "maps", "upcall_ring"));
    let n = 0;
    ring.start((bufs) => {
      n += bufs.length;
    });
    const own = threadScheduling();
    try {
      ring.setBusyPoll(300_000, 20_000, 1);
      assert.equal(ring.stats().realtimePriority, 1);
      let during: ReturnType<typeof threadScheduling> | undefined;
      for (let attempt = 0; attempt < 10 && during === undefined; attempt++) {
        const seen = n;
        await sendFromVm(1, 0, 6500 + attempt);
        await until("the record", () => n > seen);
        // This thread is the loop's: while the window is open it runs SCHED_FIFO.
        if (ring.stats().polling) during = threadScheduling();
        else await new Promise((r) => setTimeout(r, 50)); // ended early (preempted): again
      }
      assert.ok(during, "a window open after a miss");
      assert.equal(during.policy, 1, "SCHED_FIFO while polling");
      await until("the window closed", () => !ring.stats().polling, 10_000);
      assert.deepEqual(threadScheduling(), own, "policy, nice and slice as before");
      assert.equal(ring.stats().realtimeFailures, 0);
    } finally {
      ring.close();
      assert.deepEqual(threadScheduling(), own);
    }
  });

  test("a busy-poll window that is not a whole number of µs from 0 to 1 s is refused", () => {
    const ring = new UpcallRing(join(progs.pinDir, "maps", "upcall_ring"));
    ring.start(() => {});
    try {
      for (const bad of [-1, 1.5, 1_000_001, Number.NaN]) {
        assert.throws(
          () => ring.setBusyPoll(bad),
          (e: Error & { code?: string }) =>
            e instanceof RangeError &&
            e.code === "INVALID_ARGUMENT" &&
            /0 \(off\) to 1000000/.test(e.message),
          String(bad),
        );
      }
      assert.throws(() => ring.setBusyPoll(1000, -5), /pauseUs one from 0 to 60000000/);
      assert.throws(() => ring.setBusyPoll(1000, 1000, 100), /rtPriority one from 0 to 99/);
      assert.equal(ring.stats().busyPollUs, 0, "a refused value changes nothing");
    } finally {
      ring.close();
    }
  });

  test("frames longer than a record take the upcall device, not the ring", async () => {
    const before = counter(ST_RING_UPCALL);
    const up = counter(ST_UPCALL);
    // One unfragmented 1742-byte frame (the VM's MTU is 2000 here).
    const r = await lab.exec(vm.ns, ["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1700", "10.78.0.2"]);
    assert.notEqual(r.code, 0); // nobody answers
    await until("the miss counted", () => counter(ST_UPCALL) > up);
    assert.equal(counter(ST_RING_UPCALL), before, "no ring record for a frame over RING_FRAME_MAX");
  });

  test("a ring nobody reads fills; further misses are dropped and counted", async () => {
    const full0 = counter(ST_RING_FULL);
    const ring0 = counter(ST_RING_UPCALL);
    // ~1.5 kB frames: the 2 MiB ring holds about 1270 records; 2000 misses overflow it.
    const burst = await lab.exec(
      vm.ns,
      [
        process.execPath,
        "-e",
        `const s = require("node:dgram").createSocket("udp4");
         let i = 0;
         const next = () => (i++ < 2000 ? s.send(Buffer.alloc(1400), 5000 + (i % 1000), "10.78.0.2", next) : s.close());
         next();`,
      ],
      60_000,
    );
    assert.equal(burst.code, 0, burst.stderr);
    const inRing = counter(ST_RING_UPCALL) - ring0;
    const dropped = counter(ST_RING_FULL) - full0;
    assert.ok(dropped > 0, `overflow dropped and counted (${dropped})`);
    assert.ok(inRing <= (2 << 20) / (RING_FRAME_MAX + 48 + 8), `bounded by the ring (${inRing})`);
    // A reader started now gets exactly the records that fit, then the ring has room again.
    const ring = new UpcallRing(join(progs.pinDir, "maps", "upcall_ring"));
    let n = 0;
    ring.start((bufs) => {
      n += bufs.length;
    });
    try {
      await until(`${inRing} records read`, () => n >= inRing);
      assert.equal(ring.stats().pending, 0);
      await lab.exec(vm.ns, ["ping", "-c", "1", "-W", "1", "10.78.0.2"]);
      await until("a record after the drain", () => n > inRing);
    } finally {
      ring.close();
    }
  });
});
