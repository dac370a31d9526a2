import assert from "node:assert/strict";
import { test } from "node:test";
import { agentTesting } from "@isthmus/site-agent";
import { measure } from "./datapath.js";

const skip = agentTesting.rootSkipReason(["ip", "iperf3", "ping"]);
if (skip) console.log(`# skipping datapath benchmark quick run: ${skip}`);

test("bench datapath: quick mode measures both paths and the Node UDP ceiling", { skip }, async () => {
  const r = await measure(true);
  for (const [path, v] of [
    ["isthmus", r.isthmus],
    ["kernel", r.kernel],
  ] as const) {
    assert.ok(v.tcpGbps > 0, `${path} TCP throughput measured`);
    assert.ok(v.udpSmallPps > 0, `${path} small-packet rate measured`);
    assert.ok(v.rttMs > 0, `${path} RTT measured`);
    assert.ok(v.rttP50Ms > 0, `${path} per-packet RTTs parsed`);
  }
  assert.ok(r.nodeUdpCeiling.smallPps > 0 && r.nodeUdpCeiling.largeGbps > 0);
  assert.ok(Number.isFinite(r.ratios.tcpVsKernel) && Number.isFinite(r.ratios.ppsVsNodeCeiling));
  if (r.kernelFastPath) {
    const k = r.kernelFastPath;
    assert.ok(k.tcpGbps > 0 && k.udpSmallPps > 0 && k.rttMs > 0, "kernel fast path measured");
    assert.ok(k.flowSetup.samples > 0 && k.flowSetupWarmup.samples > 0, "flow setup sampled");
    // The stages of each setup add up to its latency from the miss (same timestamps, split).
    const stageP50s = Object.values(k.flowSetup.stages).map((l) => l.p50Ms);
    assert.equal(stageP50s.length, 7, "every stage reported");
    assert.ok(
      stageP50s.every((x) => Number.isFinite(x) && x >= 0),
      "stage latencies measured",
    );
    assert.ok(
      k.flowSetup.tail.samples >= 3 && k.flowSetup.tail.meanMs >= k.flowSetup.p50Ms,
      "tail is the slowest",
    );
    assert.equal(k.runs.length, k.reps, "every interleaved repetition kept");
    assert.deepEqual(
      k.runs.map((x) => x.first),
      k.runs.map((_, i) => (i % 2 === 0 ? "bridge" : "fast")),
      "the order alternates",
    );
    const tcps = k.runs.map((x) => x.fast.tcpGbps);
    assert.ok(
      k.tcpGbps >= Math.min(...tcps) && k.tcpGbps <= Math.max(...tcps),
      "the median is within the runs",
    );
    assert.ok(k.ratioRange.tcp[0] <= k.ratioRange.tcp[1]);
    assert.ok(k.kernelHits > k.upcalls, "the kernel, not the agent, carried the traffic");
  } else {
    assert.ok(
      !process.env.CI || !process.getuid || process.getuid() !== 0,
      `kernel path skipped: ${r.kernelFastPathSkipped}`,
    );
  }
});
