// Runs the few ip/tc/sysctl commands the kernel datapath needs, in the agent's own network
// namespace or, with a namespace file, inside that one through `nsenter --net=` (not `ip netns
// exec`, which remounts /sys privately and hides bpffs pins). Only set-up and tear-down use this;
// the packet and flow paths never spawn processes.
import { execFileSync } from "node:child_process";

export function runIn(netns: string | undefined, cmd: string, args: string[]): string {
  const argv = netns ? ["nsenter", `--net=${netns}`, cmd, ...args] : [cmd, ...args];
  try {
    return execFileSync(argv[0]!, argv.slice(1), { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${argv.join(" ")}: ${(err.stderr ?? "").trim() || err.message}`);
  }
}

export interface LinkInfo {
  ifindex: number;
  mtu: number;
  /** A veth whose peer is in another network namespace (a VM's, or a container's). */
  vethPeerElsewhere: boolean;
}

/** ifindex, MTU and kind of `ifname`, or undefined when it does not exist. */
export function linkInfo(netns: string | undefined, ifname: string): LinkInfo | undefined {
  let out: string;
  try {
    out = runIn(netns, "ip", ["-o", "-d", "link", "show", "dev", ifname]);
  } catch {
    return undefined;
  }
  const idx = /^(\d+):/.exec(out);
  const mtu = / mtu (\d+)/.exec(out);
  if (!idx || !mtu) return undefined;
  // -d adds the kind after the link line ("\    veth ..."); a peer elsewhere shows link-netns(id).
  const veth = /\\\s+veth\b/.test(out);
  return {
    ifindex: Number(idx[1]),
    mtu: Number(mtu[1]),
    vethPeerElsewhere: veth && / link-netns(id)? \S+/.test(out),
  };
}

/** The interface holding the IPv4 address `ip`, if any. */
export function interfaceWithAddress(netns: string | undefined, ip: string): string | undefined {
  const out = runIn(netns, "ip", ["-o", "-4", "addr", "show"]);
  for (const line of out.split("\n")) {
    const m = /^\d+:\s+(\S+)\s+inet\s+([\d.]+)\//.exec(line);
    if (m && m[2] === ip) return m[1]!.split("@")[0];
  }
  return undefined;
}

/** Deletes a link when it exists (a veth's peer goes with it). */
export function deleteLink(netns: string | undefined, ifname: string): boolean {
  if (!linkInfo(netns, ifname)) return false;
  try {
    runIn(netns, "ip", ["link", "del", ifname]);
    return true;
  } catch {
    return false;
  }
}
