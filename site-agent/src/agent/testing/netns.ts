// Network-namespace "VMs" for root tests: a namespace with eth0 (one end of a veth pair) and the
// other end left in the test's namespace for the agent to bind. Names carry the test process id so
// parallel runs do not collide; `cleanup` removes everything created.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Skip reason for root-only tests, or undefined when they must run (always in CI). */
export function rootSkipReason(tools: string[] = ["ip"]): string | undefined {
  if (process.env.CI) return undefined;
  if (!isRoot()) return "needs root (network namespaces); CI runs it as root";
  for (const t of tools) {
    if (spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0) return `needs ${t} on PATH`;
  }
  return undefined;
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

export interface Vm {
  ns: string;
  hostIf: string;
  mac: string;
  ip: string;
}

export class NetnsLab {
  private readonly namespaces: string[] = [];
  private readonly links: string[] = [];
  readonly tag: string;
  private n = 0;

  constructor(prefix = "it") {
    this.tag = `${prefix}${(process.pid % 100000).toString(36)}`;
  }

  name(kind: string): string {
    return `${this.tag}${kind}${this.n++}`.slice(0, 15);
  }

  addNamespace(): string {
    const ns = this.name("n");
    sh("ip", ["netns", "add", ns]);
    this.namespaces.push(ns);
    sh("ip", ["-n", ns, "link", "set", "lo", "up"]);
    return ns;
  }

  /** A VM namespace with eth0 = `ip/prefix`, MAC `mac`, MTU 1450 (VXLAN overhead fits 1500). */
  addVm(mac: string, cidr: string, gateway?: string): Vm {
    const ns = this.addNamespace();
    const hostIf = this.name("v");
    sh("ip", ["link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    this.links.push(hostIf);
    sh("ip", ["link", "set", hostIf, "mtu", "1450", "up"]);
    sh("ip", ["-n", ns, "link", "set", "eth0", "address", mac, "mtu", "1450", "up"]);
    sh("ip", ["-n", ns, "addr", "add", cidr, "dev", "eth0"]);
    if (gateway) sh("ip", ["-n", ns, "route", "add", "default", "via", gateway]);
    return { ns, hostIf, mac, ip: cidr.split("/")[0]! };
  }

  /** Runs a command inside a namespace (async, so the agent in this process keeps forwarding). */
  exec(
    ns: string,
    cmd: string[],
    timeoutMs = 20_000,
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      // ns "" runs in the test's own namespace.
      const argv = ns === "" ? cmd : ["ip", "netns", "exec", ns, ...cmd];
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => {
        stdout += d;
      });
      child.stderr.on("data", (d) => {
        stderr += d;
      });
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
    });
  }

  /**
   * Resolves once a socket in `ns` listens on `port` (TCP) or is bound to it (UDP). A server started
   * with exec/spawn binds only after `ip netns exec`, a shell and the program have started, which
   * takes seconds on a loaded machine: a client must not race it. Throws after `timeoutMs`.
   */
  async listening(ns: string, port: number, proto: "tcp" | "udp" = "tcp", timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.exec(
        ns,
        ["ss", "-Hln", proto === "tcp" ? "-t" : "-u", "sport", "=", `:${port}`],
        10_000,
      );
      if (r.code === 0 && r.stdout.trim() !== "") return;
      if (Date.now() > deadline) {
        throw new Error(
          `nothing listens on ${proto} port ${port} in ${ns} after ${timeoutMs} ms: ${r.stderr}`,
        );
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  /** Starts a long-running command in a namespace; the caller kills it (by its pid). */
  spawn(ns: string, cmd: string[]) {
    return spawn("ip", ["netns", "exec", ns, ...cmd], { stdio: ["ignore", "pipe", "pipe"] });
  }

  /**
   * Runs a capture-style command in this namespace; `ready` resolves once it prints its first
   * stderr line (tshark/tcpdump announce "Capturing on ..."), `done` with its stdout.
   */
  spawnRoot(
    cmd: string[],
    timeoutMs = 20_000,
  ): { ready: Promise<void>; done: Promise<string>; pid: number | undefined } {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    const ready = new Promise<void>((resolve) => {
      child.stderr.once("data", () => resolve());
      setTimeout(resolve, 3000);
    });
    const done = new Promise<string>((resolve) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      child.on("close", () => {
        clearTimeout(timer);
        resolve(stdout);
      });
    });
    return { ready, done, pid: child.pid };
  }

  private dir: string | undefined;

  /** A path in a temporary directory removed by cleanup. */
  tempFile(name: string): string {
    this.dir ??= mkdtempSync(join(tmpdir(), "isthmus-lab-"));
    return join(this.dir, name);
  }

  trackLink(name: string): void {
    this.links.push(name);
  }

  cleanup(): void {
    for (const l of this.links) spawnSync("ip", ["link", "del", l], { stdio: "ignore" });
    for (const ns of this.namespaces) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
    this.links.length = 0;
    this.namespaces.length = 0;
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}
