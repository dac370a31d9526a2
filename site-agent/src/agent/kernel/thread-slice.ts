// The calling thread's EEVDF time slice through the sched addon (site-agent/native/sched.c). On the
// kernel path the agent's event-loop thread asks for a short slice: every first packet waits for
// that thread to wake, and a short slice lets it preempt whatever runs instead of waiting for that
// task's slice to end — without taking a larger share of the CPU (nice does that).
import { nativeAddon } from "../native-addon.js";

interface SchedAddon {
  getSlice(): { policy: number; nice: number; sliceNs: number };
  setSlice(ns: number): void;
}

const ADDON = nativeAddon<SchedAddon>("isthmus_sched.node", "thread slice");

/** The slice the kernel path asks for when agent.kernel.threadSliceUs is unset (µs). */
export const DEFAULT_THREAD_SLICE_US = 100;

function load(): SchedAddon {
  return ADDON.load();
}

/** The calling thread's slice in µs as the kernel reports it (its base slice unless one was set). */
export function threadSliceUs(): number {
  return load().getSlice().sliceNs / 1000;
}

/** The calling thread's scheduling policy (0 SCHED_OTHER, 1 SCHED_FIFO, ...), nice value and slice. */
export function threadScheduling(): { policy: number; nice: number; sliceUs: number } {
  const s = load().getSlice();
  return { policy: s.policy, nice: s.nice, sliceUs: s.sliceNs / 1000 };
}

/**
 * Sets the calling thread's slice (µs; the kernel clamps to 100 µs..100 ms; 0 = its default) and
 * returns what the kernel then reports. A kernel without custom slices (before 6.12) accepts the
 * call and keeps its base slice: the caller compares the result to see whether it took effect.
 */
export function setThreadSliceUs(us: number): number {
  if (!Number.isInteger(us) || us < 0 || us > 100_000) {
    throw new Error(`thread slice ${us} µs: must be an integer 0..100000`);
  }
  const a = load();
  a.setSlice(us * 1000);
  return a.getSlice().sliceNs / 1000;
}
