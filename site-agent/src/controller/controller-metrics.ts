// Prometheus metrics of one site controller (prom-client), read from its parts at scrape time.
import { Gauge, Histogram, Registry } from "prom-client";

export interface MetricSources {
  appliedIndex: () => number;
  stalenessSeconds: () => number;
  federationConnected: () => boolean;
  active: () => boolean;
  topologyRevision: () => number;
  watchStreams: () => number;
  slowWatchersCut: () => number;
  txRetries: () => number;
  translationProblems: () => number;
  reportsSent: () => number;
  hostsAlive: () => number;
  hostsMarkedDown: () => number;
}

/** Where an intent entry's time at the site goes (seconds; the propagation bench reads them). */
export interface EntryStages {
  /** Received from the coordinator → its apply starts (the write queue was busy). */
  wait: number;
  /** Apply: translate, one SERIALIZABLE transaction, commit (with the database's fsync). */
  apply: number;
}

export function controllerMetrics(src: MetricSources): {
  registry: Registry;
  observeEntry: (s: EntryStages) => void;
} {
  const registry = new Registry();
  const stages = new Histogram({
    name: "isthmus_site_intent_entry_seconds",
    help: "Time an intent entry spends at the site, by stage: wait (queued behind other writes), apply (translate + transaction + commit)",
    labelNames: ["stage"],
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
    registers: [registry],
  });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  gauge(
    "isthmus_site_applied_index",
    "Last coordinator log index applied to the site database",
    src.appliedIndex,
  );
  gauge(
    "isthmus_site_staleness_seconds",
    "Seconds since the site last had a coordinator stream (0 while connected)",
    src.stalenessSeconds,
  );
  gauge("isthmus_site_federation_connected", "1 while a WatchIntent stream is open", () =>
    src.federationConnected() ? 1 : 0,
  );
  gauge("isthmus_site_controller_active", "1 while this replica holds the controller lease", () =>
    src.active() ? 1 : 0,
  );
  gauge(
    "isthmus_site_topology_revision",
    "Newest topology revision this replica has seen",
    src.topologyRevision,
  );
  gauge("isthmus_site_watch_streams", "Open TopologyService.Watch streams", src.watchStreams);
  gauge("isthmus_site_watchers_cut_total", "Watch streams cut off for falling behind", src.slowWatchersCut);
  gauge("isthmus_site_db_tx_retries_total", "Database transactions re-run after a conflict", src.txRetries);
  gauge(
    "isthmus_site_translation_problems_total",
    "Intent parts the translation skipped as invalid",
    src.translationProblems,
  );
  gauge(
    "isthmus_site_realized_reports_total",
    "ReportRealized calls a coordinator accepted",
    src.reportsSent,
  );
  gauge(
    "isthmus_site_hosts_alive",
    "Registered hosts whose agents heartbeat within the timeout",
    src.hostsAlive,
  );
  gauge(
    "isthmus_site_hosts_marked_down_total",
    "Times this replica marked a host not alive for missing heartbeats",
    src.hostsMarkedDown,
  );
  return {
    registry,
    observeEntry: (s) => {
      stages.observe({ stage: "wait" }, s.wait);
      stages.observe({ stage: "apply" }, s.apply);
    },
  };
}
