// One agent's first snapshot in a process of its own, as a real agent takes it: a fresh process
// whose decoder and heap have never seen a snapshot (an agent's first snapshot is its only one).
// The benchmark's own process would time its JIT and heap warmed by earlier tries. Prints one line
// of JSON (SnapshotTiming) and exits.
import { timeSnapshot } from "./bench-clients.js";

const [address, hostId, hostToken] = process.argv.slice(2);
if (!address || !hostId || !hostToken) {
  console.error("usage: snapshot-child <address> <hostId> <hostToken>");
  process.exit(2);
}
const cpu0 = process.cpuUsage();
const r = await timeSnapshot(address, hostId, hostToken);
const cpu = process.cpuUsage(cpu0);
// CPU of the whole try (counting the objects afterwards included), for reading a loaded run.
process.stdout.write(`${JSON.stringify({ ...r, cpuMs: Math.round((cpu.user + cpu.system) / 1000) })}\n`);
process.exit(0);
