// Root test: `startAgent` with `--datapath kernel` (what `isthmus agent --datapath kernel` runs)
// builds the kernel datapath, binds a VM port through it (tc program attached, no AF_PACKET on
// the VM port), hands the VM's first frames to the agent as upcalls, reports the datapath in its
// status, and removes its devices, filters and pins when stopped.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { getPriority, setPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { silentLogger } from "@isthmus/schema";
import { TopologyBuilder } from "../../sim/index.js";
import { afPacketAvailable } from "../afpacket-port.js";
import { startAgent } from "../agent-process.js";
import { FakeSimulator } from "../testing/fake-simulator.js";
import { FakeTopologyServer } from "../testing/fake-topology-server.js";
import { NetnsLab, rootSkipReason, type Vm } from "../testing/netns.js";
import { bpfMapAddonAvailable } from "./bpf-map.js";
import { kernelDatapathName } from "./datapath-select.js";
import { KernelDatapath } from "./kernel-datapath.js";
import { linkInfo, runIn } from "./netns-exec.js";
import { kernelDatapathUnavailable } from "./tc-programs.js";
import { setThreadSliceUs, threadSliceUs } from "./thread-slice.js";

const skip =
  rootSkipReason(["ip", "ping", "tc", "bpftool", "nsenter"]) ??
  (process.env.CI
    ? undefined
    : (kernelDatapathUnavailable() ??
      (bpfMapAddonAvailable() && afPacketAvailable() ? undefined : "native addons not built")));
if (skip) console.log(`# skipping kernel agent process test: ${skip}`);

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("isthmus agent --datapath kernel", { skip }, () => {
  const lab = new NetnsLab("ka");
  let dir: string;
  let vm: Vm;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "isthmus-ka-"));
    vm = lab.addVm("02:00:00:00:84:01", "10.84.0.1/24");
  });

  after(() => {
    lab.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("binds the VM port through the kernel path, upcalls its first frames, cleans up on stop", async () => {
    const t = new TopologyBuilder();
    const h = t.host(`ka-${process.pid}`, "127.0.0.1");
    const net = t.bridge({ name: "ka" });
    t.vmPort(net, h, vm.mac, ["10.84.0.1"], { interfaceName: vm.hostIf });
    const server = new FakeTopologyServer(t.objects, 1);
    const controller = await server.start();
    const bpffs = join(dir, "bpffs");
    const config = join(dir, "agent.yaml");
    // nice 1: the thread's priority is applied (this test runs the agent in its own process);
    // threadSliceUs 400: so is its time slice (left as it was where the kernel has no custom slices);
    // upcallBusyPollUs 2000: the ring reader busy-polls for 2 ms after each miss.
    const sliceBefore = threadSliceUs();
    writeFileSync(
      config,
      `agent:\n  nice: 1\n  kernel:\n    bpffs: ${bpffs}\n    stateDir: ${dir}\n    threadSliceUs: 400\n    upcallBusyPollUs: 2000\n`,
    );
    const name = kernelDatapathName(h.id);
    const running = await startAgent(
      {
        config,
        host: h.id,
        controller,
        tunnelIp: "127.0.0.1",
        // A port of its own: the VXLAN device binds it in this namespace.
        tunnelPort: 20_000 + (process.pid % 20_000),
        metricsListen: "127.0.0.1:0",
        adminListen: "127.0.0.1:0",
        datapath: "kernel",
      },
      { log: silentLogger(), simulator: new FakeSimulator() },
    );
    try {
      assert.equal(running.datapath.kind, "kernel");
      await until("the VM port bound", () => running.agent.boundPorts().size === 1);
      assert.match(runIn(undefined, "tc", ["filter", "show", "dev", vm.hostIf, "ingress"]), /port_ingress/);
      for (const d of ["u0", "u1", "vx"]) assert.ok(linkInfo(undefined, `${name}${d}`), `${name}${d} exists`);
      // The VM's ARP for an unknown neighbour misses in the kernel and reaches the agent.
      await lab.exec(vm.ns, ["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.84.0.9"]);
      await until("an upcall", () => running.datapath.stats().upcalls > 0);
      // The misses opened busy-poll windows, which close again 2 ms after the last one.
      const dp = running.datapath;
      assert.ok(dp instanceof KernelDatapath);
      await until("the busy-poll window closed", () => !dp.upcallBusyPoll().polling);
      const status = (await (await fetch(`http://127.0.0.1:${running.adminPort}/status`)).json()) as {
        datapath: string;
        kernel: { upcallRing: { busyPollUs: number; pollWindows: number; recordsWoken: number } };
      };
      assert.equal(status.datapath, "kernel");
      assert.equal(status.kernel.upcallRing.busyPollUs, 2000, "agent.kernel.upcallBusyPollUs applied");
      assert.ok(status.kernel.upcallRing.pollWindows > 0, "a miss opened a window");
      assert.ok(status.kernel.upcallRing.recordsWoken > 0, "the first miss woke the loop");
      assert.equal(getPriority(), 1, "agent.nice applied to the event-loop thread");
      const slice = threadSliceUs();
      assert.ok(slice === 400 || slice === sliceBefore, `agent.kernel.threadSliceUs applied (${slice} µs)`);
      // Flow-setup samples (none yet: the fake simulator installs nothing the kernel carries).
      const setup = (await (
        await fetch(`http://127.0.0.1:${running.adminPort}/flow-setup?since=0`)
      ).json()) as {
        total: number;
        fromMiss: number[];
        fromRead: number[];
      };
      assert.equal(typeof setup.total, "number");
      assert.equal(setup.fromMiss.length, setup.total);
      assert.equal(setup.fromRead.length, setup.total);
      const bad = await fetch(`http://127.0.0.1:${running.adminPort}/flow-setup?since=-1`);
      assert.equal(bad.status, 404);
      assert.match(await bad.text(), /since=<n>/);
      const metrics = await (await fetch(`http://127.0.0.1:${running.metricsPort}/metrics`)).text();
      assert.match(metrics, /isthmus_agent_upcalls_total [1-9]/);
      assert.match(metrics, /isthmus_agent_upcall_busy_poll_window_us 2000/);
      assert.match(metrics, /isthmus_agent_upcall_busy_poll_windows_total [1-9]/);
      const polled = /^isthmus_agent_upcall_busy_poll_seconds_total (\S+)$/m.exec(metrics);
      assert.ok(polled && Number(polled[1]) > 0, "time spent polling counted");
      assert.match(metrics, /isthmus_agent_upcall_ring_records_total\{read="woken"\} [1-9]/);
    } finally {
      await running.stop();
      await server.stop();
      setPriority(0);
      setThreadSliceUs(sliceBefore);
    }
    for (const d of ["u0", "u1", "vx"])
      assert.equal(linkInfo(undefined, `${name}${d}`), undefined, `${d} removed`);
    assert.doesNotMatch(runIn(undefined, "tc", ["filter", "show", "dev", vm.hostIf, "ingress"]), /bpf/);
    assert.equal(existsSync(join(bpffs, `isthmus-${name}`)), false, "pins removed");
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith("kernel-datapath-")),
      [],
      "state file removed",
    );
  });
});
