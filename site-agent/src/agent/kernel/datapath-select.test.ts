import assert from "node:assert/strict";
import { test } from "node:test";
import { chooseDatapath, kernelDatapathName } from "./datapath-select.js";

test("userspace is chosen without probing; kernel fails with the reason; auto falls back with it", () => {
  assert.deepEqual(chooseDatapath("userspace", { bpffs: "/sys/fs/bpf", tunnelPort: 0 }), {
    kind: "userspace",
  });
  // Port 0 can never carry the kernel path (the VXLAN device needs a fixed port), root or not.
  assert.throws(
    () => chooseDatapath("kernel", { bpffs: "/sys/fs/bpf", tunnelPort: 0 }),
    /^Error: --datapath kernel: .+/,
  );
  const auto = chooseDatapath("auto", { bpffs: "/sys/fs/bpf", tunnelPort: 0 });
  assert.equal(auto.kind, "userspace");
  assert.ok(auto.fallbackReason && auto.fallbackReason.length > 0, "auto says why it fell back");
});

test("device names are short, stable per host and distinct between hosts", () => {
  const a = kernelDatapathName("host-a");
  assert.match(a, /^is[0-9a-f]{7}$/);
  assert.equal(kernelDatapathName("host-a"), a);
  assert.notEqual(kernelDatapathName("host-b"), a);
  assert.ok(`${a}vx`.length <= 15, "fits IFNAMSIZ");
});
