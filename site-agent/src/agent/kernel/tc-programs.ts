// Loads the kernel fast path's eBPF object once (bpftool loadall, programs and maps pinned under a
// bpffs directory) and attaches/detaches its programs on interfaces with tc clsact ingress filters.
// Interfaces in other namespaces are reached with `nsenter --net=`: `ip netns exec`/`tc -n` remount
// /sys privately, so pins under /sys/fs/bpf would vanish for them.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BpfMap } from "./bpf-map.js";
import { FLOW_KEY_SIZE, FLOW_VALUE_SIZE } from "./flow-map-codec.js";

export const FLOW_OBJECT_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "bpf",
  "build",
  "flow.bpf.o",
);

/** Program names (ELF function names) in flow.bpf.o. */
export type FlowProgram = "port_ingress" | "vxlan_ingress" | "upcall_ingress";

/**
 * CPUs a per-CPU map has a slot for (the kernel sizes them by possible CPUs, not online ones):
 * the count in /sys/devices/system/cpu/possible ("0-3", "0,2-5").
 */
export function possibleCpus(path = "/sys/devices/system/cpu/possible"): number {
  const text = readFileSync(path, "utf8").trim();
  let n = 0;
  for (const part of text.split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new Error(`${path}: cannot read the CPU list ${JSON.stringify(text)}`);
    n += m[2] === undefined ? 1 : Number(m[2]) - Number(m[1]) + 1;
  }
  return n;
}

/** Why the kernel datapath cannot load here, or undefined when it can try. */
export function kernelDatapathUnavailable(): string | undefined {
  if (process.platform !== "linux") return "the kernel datapath is Linux-only";
  if (process.getuid?.() !== 0) return "loading BPF programs needs root (CAP_BPF + CAP_NET_ADMIN)";
  if (!existsSync(FLOW_OBJECT_PATH))
    return `${FLOW_OBJECT_PATH} is not built (needs clang and libbpf-dev at build time)`;
  for (const tool of ["bpftool", "tc", "nsenter"]) {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
    } catch {
      return `${tool} is not on PATH`;
    }
  }
  return undefined;
}

function run(cmd: string, args: string[], netns?: string): string {
  const argv = netns ? ["nsenter", `--net=${netns}`, cmd, ...args] : [cmd, ...args];
  try {
    return execFileSync(argv[0]!, argv.slice(1), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${argv.join(" ")}: ${(err.stderr ?? "").trim() || err.message}`);
  }
}

function isBpffs(dir: string): boolean {
  return readFileSync("/proc/mounts", "utf8")
    .split("\n")
    .some((l) => {
      const f = l.split(" ");
      return f[1] === dir && f[2] === "bpf";
    });
}

export interface TcProgramsOptions {
  /** A bpffs mount point; mounted here when it is not one yet (and unmounted by unload). */
  bpffs: string;
  /** Subdirectory of `bpffs` for this agent's pins. libbpf rewrites '.' in pin paths: avoid dots. */
  name: string;
  objectPath?: string;
}

export class TcPrograms {
  private mountedByUs = false;
  private readonly attached = new Map<string, { ifname: string; netns: string | undefined }>();
  readonly pinDir: string;

  private constructor(private readonly opts: TcProgramsOptions) {
    this.pinDir = join(opts.bpffs, opts.name);
  }

  /** Loads flow.bpf.o and pins its programs (`<pinDir>/progs`) and maps (`<pinDir>/maps`). */
  static load(opts: TcProgramsOptions): TcPrograms {
    const why = kernelDatapathUnavailable();
    if (why && !(opts.objectPath && existsSync(opts.objectPath))) throw new Error(`kernel datapath: ${why}`);
    if (opts.name.includes(".") || opts.bpffs.includes(".")) {
      throw new Error(`kernel datapath: pin path ${join(opts.bpffs, opts.name)} must not contain '.'`);
    }
    const p = new TcPrograms(opts);
    mkdirSync(opts.bpffs, { recursive: true });
    if (!isBpffs(opts.bpffs)) {
      run("mount", ["-t", "bpf", "bpf", opts.bpffs]);
      p.mountedByUs = true;
    }
    // Pins left by a crashed run are reclaimed: the old programs stay attached until detached.
    rmSync(p.pinDir, { recursive: true, force: true });
    mkdirSync(p.pinDir);
    try {
      run("bpftool", [
        "prog",
        "loadall",
        opts.objectPath ?? FLOW_OBJECT_PATH,
        join(p.pinDir, "progs"),
        "pinmaps",
        join(p.pinDir, "maps"),
      ]);
    } catch (e) {
      p.unload();
      throw e;
    }
    return p;
  }

  /** Opens the pinned flow map (the caller closes it). */
  openFlowMap(): BpfMap {
    return BpfMap.openPinned(join(this.pinDir, "maps", "flows"), FLOW_KEY_SIZE, FLOW_VALUE_SIZE);
  }

  /** Opens the datapath counters (u32 index -> u64, `enum dp_stat` in flow.bpf.c). */
  /** dp_stats, a per-CPU array: a value is one u64 per possible CPU (`cpus`, see possibleCpus). */
  openStatsMap(cpus = possibleCpus()): BpfMap {
    return BpfMap.openPinned(join(this.pinDir, "maps", "dp_stats"), 4, 8 * cpus);
  }

  /** Opens another pinned map of the object by name (the caller closes it). */
  openMap(name: "ports" | "tunnel_ports" | "config", keySize: number, valueSize: number): BpfMap {
    return BpfMap.openPinned(join(this.pinDir, "maps", name), keySize, valueSize);
  }

  /** Attaches `program` on `ifname`'s clsact ingress; `netns` is a namespace path (/run/netns/x). */
  attach(ifname: string, program: FlowProgram, netns?: string): void {
    run("tc", ["qdisc", "replace", "dev", ifname, "clsact"], netns);
    run(
      "tc",
      [
        "filter",
        "replace",
        "dev",
        ifname,
        "ingress",
        "pref",
        "1",
        "handle",
        "1",
        "bpf",
        "da",
        "object-pinned",
        join(this.pinDir, "progs", program),
      ],
      netns,
    );
    this.attached.set(`${netns ?? ""}/${ifname}`, { ifname, netns });
  }

  /** Removes the clsact qdisc (and with it the filter) from `ifname`; a vanished device is fine. */
  detach(ifname: string, netns?: string): void {
    this.attached.delete(`${netns ?? ""}/${ifname}`);
    try {
      run("tc", ["qdisc", "del", "dev", ifname, "clsact"], netns);
    } catch (e) {
      const msg = (e as Error).message;
      if (!/Cannot find device|No such file|Invalid handle|Cannot delete qdisc with handle of zero/.test(msg))
        throw e;
    }
  }

  /** Detaches every program this instance attached, removes its pins, and unmounts bpffs if it mounted it. */
  unload(): void {
    for (const { ifname, netns } of [...this.attached.values()]) this.detach(ifname, netns);
    rmSync(this.pinDir, { recursive: true, force: true });
    if (this.mountedByUs) {
      run("umount", [this.opts.bpffs]);
      this.mountedByUs = false;
    }
  }
}
