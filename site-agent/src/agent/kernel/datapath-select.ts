// Chooses the agent's datapath for `--datapath kernel|userspace|auto`: auto takes the kernel path
// where it can load (Linux, root, the compiled BPF object, bpftool/tc/ip, the native addons, a bpffs
// or a place to mount one, a fixed tunnel port) and otherwise says why it falls back.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { bpfMapAddonAvailable } from "./bpf-map.js";
import { kernelDatapathUnavailable } from "./tc-programs.js";
import { upcallDeviceAvailable } from "./upcall-device.js";

export type DatapathMode = "userspace" | "kernel" | "auto";

/** Why the kernel datapath cannot run here, or undefined when it can. */
export function kernelDatapathSupport(opts: { bpffs: string; tunnelPort: number }): string | undefined {
  const why = kernelDatapathUnavailable();
  if (why) return why;
  if (!bpfMapAddonAvailable()) return "the bpfmap native addon is not built";
  if (!upcallDeviceAvailable()) return "the AF_PACKET native addon is not built";
  try {
    execFileSync("sh", ["-c", "command -v ip"], { stdio: "ignore" });
  } catch {
    return "ip (iproute2) is not on PATH";
  }
  if (!existsSync(opts.bpffs) && !existsSync("/sys/fs")) return `no bpffs at ${opts.bpffs}`;
  if (opts.tunnelPort === 0) return "the tunnel port is 0 (the VXLAN device needs a fixed port)";
  return undefined;
}

/**
 * The datapath to run: `kernel` fails with the reason when it cannot load; `auto` falls back to
 * userspace and returns the reason so the caller logs it.
 */
export function chooseDatapath(
  mode: DatapathMode,
  opts: { bpffs: string; tunnelPort: number },
): { kind: "userspace" | "kernel"; fallbackReason?: string } {
  if (mode === "userspace") return { kind: "userspace" };
  const why = kernelDatapathSupport(opts);
  if (!why) return { kind: "kernel" };
  if (mode === "kernel") throw new Error(`--datapath kernel: ${why}`);
  return { kind: "userspace", fallbackReason: why };
}

/** A short, stable device/pin name for this host's kernel datapath (same across restarts). */
export function kernelDatapathName(hostKey: string): string {
  return `is${createHash("sha256").update(hostKey).digest("hex").slice(0, 7)}`;
}
