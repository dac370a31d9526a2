// A child process holding one site's agent watch stream (see agent-watch-process.ts): it stamps
// each rule's arrival on this machine's clock and reports it, its revision and its own GC pauses
// and event-loop stalls to the parent over IPC, so the parent's heap is not on the measured path.
import { PauseRecorder } from "@isthmus/schema";
import { AgentWatch } from "./bench-clients.js";

export type ToWatcher =
  | { type: "recording"; on: boolean; seq: number }
  | { type: "pauses"; after: number; seq: number };
export type FromWatcher =
  | { type: "ack"; seq: number }
  | { type: "arrival"; id: string; at: number }
  | { type: "revision"; revision: number; error?: string }
  | { type: "pauses"; seq: number; report: ReturnType<PauseRecorder["report"]> };

const [site, address, hostId, hostToken] = process.argv.slice(2);
if (!site || !address || !hostId || !hostToken || !process.send) {
  console.error("usage (forked with IPC): agent-watch-child <site> <address> <hostId> <hostToken>");
  process.exit(2);
}
const send = (m: FromWatcher) => process.send?.(m);
const pauses = new PauseRecorder({ size: 4_096 }).start();
const watch = new AgentWatch(site, address, hostId, hostToken);
watch.onArrival = (id, at) => send({ type: "arrival", id, at });
// Revisions are coalesced (a catch-up brings thousands of events): the parent polls them.
let pending = false;
watch.onRevision = () => {
  if (pending) return;
  pending = true;
  setTimeout(() => {
    pending = false;
    send({ type: "revision", revision: watch.revision, error: watch.error });
  }, 10);
};
process.on("message", (m: ToWatcher) => {
  if (m.type === "recording") {
    watch.recording = m.on;
    watch.arrivals.clear();
    send({ type: "ack", seq: m.seq });
  } else if (m.type === "pauses") send({ type: "pauses", seq: m.seq, report: pauses.report(m.after) });
});
process.on("disconnect", () => {
  watch.close();
  pauses.stop();
  process.exit(0);
});
