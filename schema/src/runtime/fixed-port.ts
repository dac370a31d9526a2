// Loopback TCP ports that must keep their number once handed out (a raft peer list, a test
// process restarted on the same address). Ports from binding port 0 come from the kernel's
// ephemeral range, so any concurrent port-0 bind or outgoing connection can take one between our
// check and its real use; picking from below that range (and never twice in one process) avoids it.
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

const handedOut = new Set<number>();

/** Lowest port of the kernel's ephemeral range (32768 where it cannot be read). */
function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    const n = Number(low);
    return Number.isInteger(n) && n > 12_000 ? n : 32_768;
  } catch {
    return 32_768;
  }
}

function canBind(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/** A TCP port on `host` (127.0.0.1 by default) outside the ephemeral range that was free a moment ago. */
export async function fixedPort(host = "127.0.0.1"): Promise<number> {
  const high = ephemeralLow();
  const low = 10_000;
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    if (handedOut.has(port)) continue;
    if (await canBind(port, host)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port on ${host} found in ${low}-${high} after 200 tries`);
}
