// Ports for test processes that must keep a fixed address across restarts. Ports handed out by
// binding port 0 come from the kernel's ephemeral range, so a concurrent test's own port-0 bind
// or outgoing connection can take one between our check and the child's bind. Picking from below
// the ephemeral range (and never the same one twice in this process) avoids that race.
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

const handedOut = new Set<number>();

function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    const n = Number(low);
    return Number.isInteger(n) && n > 12_000 ? n : 32_768;
  } catch {
    return 32_768;
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** A loopback TCP port outside the ephemeral range that was free a moment ago. */
export async function fixedPort(): Promise<number> {
  const high = ephemeralLow();
  const low = 10_000;
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    if (await canBind(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free loopback port found in ${low}-${high} after 200 tries`);
}
