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
// With the try's CPU time until the snapshot was applied (timeSnapshot), for reading a loaded run.
const r = await timeSnapshot(address, hostId, hostToken);
process.stdout.write(`${JSON.stringify(r)}\n`);
process.exit(0);
