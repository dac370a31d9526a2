// Root test: a kernel datapath killed with SIGKILL leaves its devices, pins and tc filters behind;
// the next start under the same name finds and removes them, and a clean stop leaves nothing.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { silentLogger } from "@isthmus/schema";
import { afPacketAvailable } from "../afpacket-port.js";
import { NetnsLab, rootSkipReason, sh, type Vm } from "../testing/netns.js";
import { bpfMapAddonAvailable } from "./bpf-map.js";
import { KernelDatapath } from "./kernel-datapath.js";
import { linkInfo, runIn } from "./netns-exec.js";
import { kernelDatapathUnavailable } from "./tc-programs.js";

const skip =
  rootSkipReason(["ip", "tc", "bpftool", "nsenter", "mount"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ??
      (bpfMapAddonAvailable() && afPacketAvailable() ? undefined : "native addons not built")));
if (skip) console.log(`# skipping kernel datapath reclaim test: ${skip}`);

const CHILD = join(dirname(fileURLToPath(import.meta.url)), "testing", "hold-kernel-datapath.js");

function hasIngressFilter(netns: string, ifname: string): boolean {
  return /bpf/.test(runIn(netns, "tc", ["filter", "show", "dev", ifname, "ingress"]));
}

describe("kernel datapath crash reclaim", { skip }, () => {
  const lab = new NetnsLab("kr");
  let scratch: string;
  let bpffs: string;
  let ns: string;
  let vm: Vm;
  let childPid: number | undefined;

  before(() => {
    scratch = mkdtempSync(join(tmpdir(), "isthmus-kr-"));
    bpffs = join(scratch, "bpffs");
    mkdirSync(bpffs);
    sh("mount", ["-t", "bpf", "bpf", bpffs]);
    ns = `/run/netns/${lab.addNamespace()}`;
    runIn(ns, "ip", ["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"]);
    runIn(ns, "ip", ["addr", "add", "192.168.82.1/24", "dev", "ul0"]);
    runIn(ns, "ip", ["link", "set", "ul0", "up"]);
    vm = lab.addVm("02:00:00:00:82:01", "10.82.0.1/24");
    sh("ip", ["link", "set", vm.hostIf, "netns", ns.slice("/run/netns/".length)]);
    runIn(ns, "ip", ["link", "set", vm.hostIf, "up"]);
  });

  after(() => {
    if (childPid !== undefined) {
      try {
        process.kill(childPid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    lab.cleanup();
    if (bpffs) sh("umount", [bpffs]);
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  test("kill -9 leaves state; the next start removes it; a clean stop leaves nothing", async () => {
    const name = `kr${(process.pid % 46656).toString(36)}`;
    const opts = { tunnelIp: "192.168.82.1", tunnelPort: 4789, name, bpffs, netns: ns, stateDir: scratch };
    const child = spawn(process.execPath, [CHILD, JSON.stringify({ ...opts, ports: [vm.hostIf] })], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    childPid = child.pid;
    let err = "";
    child.stderr.on("data", (d) => {
      err += d;
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child not ready in 30 s: ${err}`)), 30_000);
      child.stdout.on("data", (d) => {
        if (String(d).includes("ready")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code) => reject(new Error(`child exited ${code}: ${err}`)));
    });
    const exited = new Promise((r) => child.once("exit", r));
    process.kill(child.pid!, "SIGKILL");
    await exited;
    childPid = undefined;

    const devices = [`${name}u0`, `${name}u1`, `${name}vx`];
    for (const d of devices) assert.ok(linkInfo(ns, d), `${d} survives the crash`);
    assert.ok(existsSync(join(bpffs, `isthmus-${name}`)), "pins survive the crash");
    assert.ok(hasIngressFilter(ns, vm.hostIf), "the VM port keeps the dead agent's program");

    const dp = new KernelDatapath({ ...opts, log: silentLogger() });
    await dp.start();
    try {
      assert.ok(dp.reclaimed.includes(`tc:${vm.hostIf}`), `reclaimed: ${dp.reclaimed}`);
      assert.ok(dp.reclaimed.includes(`link:${name}vx`) && dp.reclaimed.includes(`link:${name}u0`));
      assert.ok(!hasIngressFilter(ns, vm.hostIf), "the stale filter is gone (the port is not bound now)");
      for (const d of devices) assert.ok(linkInfo(ns, d), `${d} recreated`);
    } finally {
      await dp.stop();
    }
    for (const d of devices) assert.equal(linkInfo(ns, d), undefined, `${d} removed on stop`);
    assert.equal(existsSync(join(bpffs, `isthmus-${name}`)), false, "pins removed on stop");
    assert.equal(existsSync(join(scratch, `kernel-datapath-${name}.json`)), false, "state file removed");
  });
});
