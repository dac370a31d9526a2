// Prometheus metrics of one agent (prom-client): per-port and per-tunnel packet/byte counters,
// flow-table size and hit/miss counts, upcall queue depth, drops by reason, topology revision and
// controller connectivity. Values are read from the datapath when scraped, never on the packet path.
import { Counter, Gauge, Registry } from "prom-client";
import type { Datapath } from "./datapath.js";
import type { UpcallRingStats } from "./kernel/upcall-ring.js";

export interface MetricsSources {
  datapath: Datapath;
  revision: () => number;
  controllerConnected: () => boolean;
  flowStateMessages: () => number;
  /** The kernel path's upcall ring reader (busy polling); absent on the userspace path. */
  upcallRing?: () => UpcallRingStats;
}

export function createAgentMetrics(src: MetricsSources): Registry {
  const registry = new Registry();
  const stats = () => src.datapath.stats();
  const counterFrom = (
    name: string,
    help: string,
    labelNames: string[],
    read: (set: (labels: Record<string, string>, v: number) => void) => void,
  ) =>
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        read((labels, v) => {
          if (v > 0) this.inc(labels, v);
        });
      },
    });
  const gaugeFrom = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });

  for (const [dir, field] of [
    ["rx", "rxPackets"],
    ["tx", "txPackets"],
  ] as const) {
    counterFrom(
      `isthmus_agent_port_${dir}_packets_total`,
      `Packets ${dir === "rx" ? "from" : "to"} VM ports`,
      ["port", "interface"],
      (set) => {
        for (const p of stats().ports.values()) set({ port: p.portId, interface: p.name }, p[field]);
      },
    );
  }
  for (const [dir, field] of [
    ["rx", "rxBytes"],
    ["tx", "txBytes"],
  ] as const) {
    counterFrom(
      `isthmus_agent_port_${dir}_bytes_total`,
      `Bytes ${dir === "rx" ? "from" : "to"} VM ports`,
      ["port", "interface"],
      (set) => {
        for (const p of stats().ports.values()) set({ port: p.portId, interface: p.name }, p[field]);
      },
    );
  }
  for (const [name, field] of [
    ["rx_packets", "rxPackets"],
    ["tx_packets", "txPackets"],
    ["rx_bytes", "rxBytes"],
    ["tx_bytes", "txBytes"],
  ] as const) {
    counterFrom(
      `isthmus_agent_tunnel_${name}_total`,
      "VXLAN traffic per remote endpoint",
      ["remote"],
      (set) => {
        for (const [remote, t] of stats().tunnels) set({ remote }, t[field]);
      },
    );
  }
  counterFrom("isthmus_agent_drops_total", "Packets dropped, by reason", ["reason"], (set) => {
    for (const [reason, n] of stats().drops) set({ reason }, n);
  });
  counterFrom("isthmus_agent_flow_lookups_total", "Flow-table lookups by result", ["result"], (set) => {
    const s = stats();
    set({ result: "hit" }, s.flowHits);
    set({ result: "miss" }, s.flowMisses);
  });
  counterFrom("isthmus_agent_upcalls_total", "Packets sent to the simulator", [], (set) =>
    set({}, stats().upcalls),
  );
  counterFrom("isthmus_agent_flow_installs_total", "Flows installed", [], (set) => set({}, stats().installs));
  counterFrom(
    "isthmus_agent_flow_state_messages_total",
    "Flow-state messages received from peers",
    [],
    (set) => set({}, src.flowStateMessages()),
  );
  const ring = src.upcallRing;
  if (ring) {
    // What busy polling costs (time the event loop spent not sleeping) and what it caught.
    counterFrom(
      "isthmus_agent_upcall_busy_poll_seconds_total",
      "Time the agent's event loop spent busy polling the upcall ring after misses (a CPU kept busy)",
      [],
      (set) => set({}, ring().pollMs / 1000),
    );
    counterFrom(
      "isthmus_agent_upcall_busy_poll_windows_total",
      "Busy-poll windows opened (each by a miss read while none was open)",
      [],
      (set) => set({}, ring().pollWindows),
    );
    counterFrom(
      "isthmus_agent_upcall_ring_records_total",
      "Misses read from the upcall ring: by busy polling (no wake-up) or after the event loop woke",
      ["read"],
      (set) => {
        const r = ring();
        set({ read: "polled" }, r.recordsPolled);
        set({ read: "woken" }, r.recordsWoken);
      },
    );
    counterFrom(
      "isthmus_agent_upcall_busy_poll_preempted_total",
      "Busy-poll windows ended because the agent's thread lost its CPU (polling then pauses 100 ms)",
      [],
      (set) => set({}, ring().pollPreempted),
    );
    gaugeFrom(
      "isthmus_agent_upcall_busy_poll_window_us",
      "Busy-poll window after each miss (µs; 0 = off)",
      () => ring().busyPollUs,
    );
  }
  gaugeFrom("isthmus_agent_flows", "Flows in the flow table", () => stats().flows);
  gaugeFrom("isthmus_agent_flow_masks", "Distinct megaflow masks", () => stats().masks);
  gaugeFrom(
    "isthmus_agent_upcall_queue_depth",
    "Packets waiting for simulation",
    () => stats().upcallQueueDepth,
  );
  gaugeFrom("isthmus_agent_ports", "VM ports bound", () => stats().ports.size);
  gaugeFrom("isthmus_agent_topology_revision", "Revision of the local topology copy", src.revision);
  gaugeFrom("isthmus_agent_controller_connected", "1 while the topology watch is connected", () =>
    src.controllerConnected() ? 1 : 0,
  );
  return registry;
}
