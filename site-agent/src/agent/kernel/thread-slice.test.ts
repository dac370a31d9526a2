import assert from "node:assert/strict";
import { once } from "node:events";
import { test } from "node:test";
import { Worker } from "node:worker_threads";
import { setThreadSliceUs, threadSliceUs } from "./thread-slice.js";

const skip = process.platform !== "linux" ? "Linux only (sched_setattr)" : false;

test("the thread's slice is set, read back, and returned to the kernel's default", { skip }, () => {
  const before = threadSliceUs();
  try {
    const set = setThreadSliceUs(300);
    // A kernel before 6.12 ignores custom slices and keeps reporting its base slice.
    const supported = set === 300;
    if (!supported) assert.equal(set, before);
    assert.equal(threadSliceUs(), set);
    assert.throws(() => setThreadSliceUs(-1), /0\.\.100000/);
    assert.throws(() => setThreadSliceUs(1.5), /0\.\.100000/);
    const base = setThreadSliceUs(0);
    if (supported) assert.notEqual(base, 300, "0 gives the kernel's base slice back");
  } finally {
    setThreadSliceUs(before);
  }
});

test("the slice is per thread: a thread started before keeps its own", { skip }, async () => {
  const before = threadSliceUs();
  const w = new Worker(
    `const { workerData, parentPort } = require("node:worker_threads");
     import(workerData).then((m) => parentPort.on("message", () => parentPort.postMessage(m.threadSliceUs())));
     parentPort.postMessage("ready");`,
    { eval: true, workerData: new URL("./thread-slice.js", import.meta.url).href },
  );
  try {
    await once(w, "message");
    const theirs = async () => {
      w.postMessage("slice?");
      const [m] = (await once(w, "message")) as [number];
      return m;
    };
    const own = await theirs();
    const set = setThreadSliceUs(own === 200 ? 250 : 200);
    if (set !== own) assert.equal(await theirs(), own, "the worker's slice did not change");
    else assert.equal(await theirs(), set); // no custom slices on this kernel
  } finally {
    await w.terminate();
    setThreadSliceUs(before);
  }
});
