// `isthmus agent`: one host's edge agent as a process. Loads config, starts the userspace datapath
// and its VXLAN socket, the simulation engine, the topology watch against the site controller,
// the metrics and admin endpoints, and a 1 s housekeeping tick; stops all of it cleanly.
// VMs keep running across agent restarts: their veth host ends persist and are bound again as soon
// as the first topology snapshot arrives.
import { readFileSync } from "node:fs";
import { setPriority } from "node:os";
import {
  closeServer,
  componentLogger,
  createLogger,
  HealthState,
  type Logger,
  loadConfig,
  startMetricsServer,
} from "@isthmus/schema";
import { AfPacketPort } from "./afpacket-port.js";
import { type AgentConfig, AgentConfigSchema, splitHostPort } from "./agent-config.js";
import { startAdminServer } from "./agent-http.js";
import { createAgentMetrics } from "./agent-metrics.js";
import type { PortIO } from "./datapath.js";
import { EdgeAgent } from "./edge-agent.js";
import { HostHeartbeat, registerHost } from "./host-registration.js";
import { HostTokenRefresher, tokenExpiry } from "./host-token-refresh.js";
import { chooseDatapath, kernelDatapathName } from "./kernel/datapath-select.js";
import { KernelDatapath } from "./kernel/kernel-datapath.js";
import { setThreadSliceUs } from "./kernel/thread-slice.js";
import { EngineSimulator } from "./sim-adapter.js";
import type { Simulator } from "./simulator.js";
import { SiteNatLeases } from "./snat-lease-client.js";
import { TopologyWatchClient } from "./topology-watch-client.js";
import { UserspaceDatapath } from "./userspace-datapath.js";

export interface AgentFlags {
  config?: string;
  host?: string;
  name?: string;
  adminTokenFile?: string;
  controller?: string;
  tokenFile?: string;
  tunnelIp?: string;
  tunnelPort?: string | number;
  role?: string;
  wanIp?: string;
  wanPort?: string | number;
  metricsListen?: string;
  adminListen?: string;
  datapath?: string;
  upcallBusyPollUs?: string | number;
}

export interface RunningAgent {
  config: AgentConfig;
  hostId: string;
  agent: EdgeAgent;
  datapath: UserspaceDatapath | KernelDatapath;
  metricsPort: number;
  adminPort: number;
  tunnelPort: number;
  health: HealthState;
  /** Renews the host token (absent when the token carries no expiry). */
  hostToken: HostTokenRefresher | undefined;
  natLeases: SiteNatLeases;
  stop(): Promise<void>;
}

export interface AgentDeps {
  log?: Logger;
  /** Tests substitute in-memory ports; production binds VM veths through AF_PACKET. */
  openPort?: (name: string) => PortIO;
  simulator?: Simulator;
  /** Abandons a start still waiting (on registration): startAgent then cleans up and rejects. */
  signal?: AbortSignal;
}

export function loadAgentConfig(flags: AgentFlags, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const num = (v: string | number | undefined) => (v === undefined ? undefined : Number(v));
  return loadConfig(AgentConfigSchema, {
    file: flags.config,
    env,
    overrides: {
      "agent.host": flags.host,
      "agent.name": flags.name,
      "agent.adminTokenFile": flags.adminTokenFile,
      "agent.controller": flags.controller,
      "agent.tokenFile": flags.tokenFile,
      "agent.tunnelIp": flags.tunnelIp,
      "agent.tunnelPort": num(flags.tunnelPort),
      "agent.role": flags.role,
      "agent.wanIp": flags.wanIp,
      "agent.wanPort": num(flags.wanPort),
      "agent.metricsListen": flags.metricsListen,
      "agent.adminListen": flags.adminListen,
      "agent.datapath": flags.datapath,
      "agent.kernel.upcallBusyPollUs": num(flags.upcallBusyPollUs),
    },
  }).agent;
}

/**
 * The nice value of the agent's event-loop thread on the kernel path when agent.nice is unset. Every new flow's first
 * packet waits for that thread; at nice 0 it shares the CPUs evenly with VMs and other processes,
 * which puts their time slices into flow setup's tail (see docs/kernel-datapath.md).
 */
export const DEFAULT_AGENT_NICE = -10;

/**
 * The priority to give the agent's event-loop thread: agent.nice when set; unset, DEFAULT_AGENT_NICE
 * on the kernel path — as Open vSwitch's ovs-ctl starts ovs-vswitchd, whose handler threads do what
 * this thread does for a first packet; there the thread runs only for first packets, so its
 * priority costs the VMs little. Nothing on the userspace path: there the thread forwards every
 * packet, and at -10 it starved the VMs' own senders and receivers on a 2-core host (the datapath
 * bench's small-packet rate fell to between a third and a half of the rate at nice 0).
 */
export function agentNice(
  configured: number | undefined,
  datapath: "kernel" | "userspace",
): { value: number; explicit: boolean } | undefined {
  if (configured !== undefined) return { value: configured, explicit: true };
  return datapath === "kernel" ? { value: DEFAULT_AGENT_NICE, explicit: false } : undefined;
}

export async function startAgent(flags: AgentFlags, deps: AgentDeps = {}): Promise<RunningAgent> {
  const cfg = loadAgentConfig(flags);
  const root = deps.log ?? createLogger({ name: "agent", base: { host: cfg.host ?? cfg.name } });
  const log = componentLogger(root, "agent");
  const health = new HealthState("agent");
  health.set("topology", false, "waiting for the first snapshot");
  const flowLimits = {
    maxFlows: cfg.flows.max,
    maxExactEntries: cfg.flows.exactCache,
    maxMasks: cfg.flows.masks,
    idleTimeoutMs: cfg.flows.idleTimeoutMs,
    hardTimeoutMs: cfg.flows.hardTimeoutMs,
  };
  const chosen = chooseDatapath(cfg.datapath, { bpffs: cfg.kernel.bpffs, tunnelPort: cfg.tunnelPort });
  if (chosen.fallbackReason) {
    log.warn(
      { reason: chosen.fallbackReason },
      "datapath auto: the kernel fast path cannot load here; using userspace",
    );
  }
  const nice = agentNice(cfg.nice, chosen.kind);
  if (nice?.explicit) {
    try {
      setPriority(nice.value);
      log.info({ nice: nice.value }, "agent thread priority set");
    } catch (err) {
      throw new Error(`agent.nice ${nice.value}: cannot set the priority: ${(err as Error).message}`);
    }
  } else if (nice) {
    try {
      setPriority(nice.value);
      log.info({ nice: nice.value }, "agent thread priority set (default on the kernel path)");
    } catch (err) {
      log.info(
        { nice: nice.value, err: (err as Error).message },
        "agent thread priority left as started: no privilege for the default (set agent.nice to silence)",
      );
    }
  }
  if (chosen.kind === "kernel" && cfg.kernel.threadSliceUs > 0) {
    try {
      const got = setThreadSliceUs(cfg.kernel.threadSliceUs);
      if (got === cfg.kernel.threadSliceUs) log.info({ sliceUs: got }, "agent thread time slice set");
      else
        log.info(
          { sliceUs: got },
          "agent thread time slice left at the kernel's (no custom slices before 6.12)",
        );
    } catch (err) {
      log.warn({ err: (err as Error).message }, "agent thread time slice not set");
    }
  }
  const datapath =
    chosen.kind === "kernel"
      ? new KernelDatapath({
          tunnelIp: cfg.tunnelIp,
          tunnelPort: cfg.tunnelPort,
          name: kernelDatapathName(cfg.host ?? cfg.name ?? cfg.tunnelIp),
          bpffs: cfg.kernel.bpffs,
          stateDir: cfg.kernel.stateDir,
          netns: cfg.kernel.netns,
          upcallRate: { perSecond: cfg.kernel.upcallsPerSecond, burst: cfg.kernel.upcallBurst },
          upcallRing: cfg.kernel.upcallRing,
          upcallBusyPollUs: cfg.kernel.upcallBusyPollUs,
          upcallBusyPollRealtime: cfg.kernel.upcallBusyPollRealtime,
          flowLimits,
          upcallLimits: { perSource: cfg.upcalls.perPort, total: cfg.upcalls.total },
          log: componentLogger(root, "datapath"),
        })
      : new UserspaceDatapath({
          tunnelIp: cfg.tunnelIp,
          tunnelPort: cfg.tunnelPort,
          flowLimits,
          upcallLimits: { perSource: cfg.upcalls.perPort, total: cfg.upcalls.total },
          log: componentLogger(root, "datapath"),
        });
  await datapath.start();
  health.set("datapath", true, datapath.kind);
  let hostId = cfg.host;
  let hostToken: string | undefined;
  if (hostId === undefined) {
    const reg = await registerHost({
      controller: cfg.controller,
      name: cfg.name!,
      adminToken: readFileSync(cfg.adminTokenFile!, "utf8").trim(),
      tunnelIp: cfg.tunnelIp,
      tunnelPort: datapath.tunnelPort,
      role: cfg.role,
      ...wanOf(cfg),
      tokenFile: cfg.tokenFile,
      log,
      signal: deps.signal,
    }).catch(async (err) => {
      await datapath.stop();
      throw err;
    });
    hostId = reg.host.id;
    hostToken = reg.hostToken;
  }
  const tokenFile = cfg.tokenFile;
  const fileToken = () => (tokenFile ? readFileSync(tokenFile, "utf8").trim() : undefined);
  // A JWT host token is renewed before it expires (and replaced by registering again if it
  // expired anyway and an admin token is at hand); tokens without an expiry are used as they are.
  const initialToken = hostToken ?? readTokenFile(fileToken);
  const refresher =
    initialToken !== undefined && tokenExpiry(initialToken) !== undefined
      ? new HostTokenRefresher({
          controller: cfg.controller,
          token: initialToken,
          tokenFile,
          log: componentLogger(root, "host-token"),
          reRegister:
            cfg.name !== undefined && cfg.adminTokenFile !== undefined
              ? async () =>
                  (
                    await registerHost({
                      controller: cfg.controller,
                      name: cfg.name!,
                      adminToken: readFileSync(cfg.adminTokenFile!, "utf8").trim(),
                      tunnelIp: cfg.tunnelIp,
                      tunnelPort: datapath.tunnelPort,
                      role: cfg.role,
                      ...wanOf(cfg),
                      tokenFile,
                      log,
                      timeoutMs: 10_000,
                    })
                  ).hostToken
              : undefined,
        })
      : undefined;
  refresher?.start();
  const currentToken = () => refresher?.token ?? hostToken ?? fileToken();
  const natLeases = new SiteNatLeases({
    controller: cfg.controller,
    token: currentToken,
    log: componentLogger(root, "snat-leases"),
  });
  const agent = new EdgeAgent({
    hostId,
    role: cfg.role,
    datapath,
    simulator: deps.simulator ?? new EngineSimulator({ hostId, natLeases }),
    openPort:
      deps.openPort ??
      (datapath instanceof KernelDatapath
        ? (name) => datapath.openPort(name)
        : (name) => new AfPacketPort(name)),
    log: root,
    stateRefreshMs: cfg.stateRefreshMs,
  });
  const sink = {
    get revision() {
      return agent.store.revision;
    },
    get ready() {
      return agent.store.ready;
    },
    applySnapshot: (s: Parameters<EdgeAgent["applySnapshot"]>[0]) => {
      agent.applySnapshot(s);
      health.set("topology", true);
      log.info(
        {
          revision: s.revision,
          objects: s.objects.length + (s.packedRules?.count ?? 0),
          ports: agent.boundPorts().size,
        },
        "topology snapshot applied",
      );
    },
    applyChange: (c: Parameters<EdgeAgent["applyChange"]>[0]) => agent.applyChange(c),
  };
  const watch = new TopologyWatchClient({
    address: cfg.controller,
    hostId,
    token: currentToken,
    sink,
    log: root,
  });
  // Disconnected from the controller, the agent keeps forwarding with its last copy: still serving.
  watch.onStatus = (connected, detail) =>
    health.set("controller", true, connected ? "" : `disconnected: ${detail}`);
  health.set("controller", true, "connecting");
  watch.start();
  const heartbeat = new HostHeartbeat({
    controller: cfg.controller,
    hostId,
    token: currentToken,
    log,
  });
  heartbeat.start();

  const registry = createAgentMetrics({
    datapath,
    revision: () => agent.store.revision,
    controllerConnected: () => watch.connected,
    flowStateMessages: () => agent.stats.flowStateMessages,
    ...(datapath instanceof KernelDatapath ? { upcallRing: () => datapath.upcallBusyPoll() } : {}),
  });
  const m = splitHostPort(cfg.metricsListen);
  const metrics = await startMetricsServer(registry, health, m.host, m.port);
  const a = splitHostPort(cfg.adminListen);
  const admin = await startAdminServer(
    {
      flows: () => ({ host: hostId, flows: datapath.dumpFlows() }),
      // With the process's CPU time so far (ms), so a benchmark can tell what busy polling costs.
      flowSetup:
        datapath instanceof KernelDatapath
          ? (since: number) => {
              const cpu = process.cpuUsage();
              return { ...datapath.flowSetup(since), cpuMs: (cpu.user + cpu.system) / 1000 };
            }
          : undefined,
      status: () => {
        const s = datapath.stats();
        return {
          host: hostId,
          name: cfg.name,
          role: cfg.role,
          datapath: datapath.kind,
          ...(datapath instanceof KernelDatapath
            ? { kernel: { ...datapath.kernelInstallCounts(), upcallRing: datapath.upcallBusyPoll() } }
            : {}),
          revision: agent.store.revision,
          controllerConnected: watch.connected,
          ports: [...s.ports.values()],
          tunnels: Object.fromEntries(s.tunnels),
          drops: Object.fromEntries(s.drops),
          flows: s.flows,
          upcallQueueDepth: s.upcallQueueDepth,
          watch: watch.stats,
          hostToken: refresher
            ? {
                expiresUnixMs: refresher.expiresUnixMs,
                renewals: refresher.renewals,
                lastError: refresher.lastError,
              }
            : undefined,
          snatLeases: { held: natLeases.held().length, ...natLeases.stats },
        };
      },
    },
    a.host,
    a.port,
  );
  const tick = setInterval(() => agent.tick(), 1000);
  tick.unref();
  log.info(
    {
      tunnel: `${cfg.tunnelIp}:${datapath.tunnelPort}`,
      metrics: metrics.port,
      admin: admin.port,
      role: cfg.role,
      datapath: datapath.kind,
    },
    "agent started",
  );
  let stopped = false;
  return {
    config: cfg,
    hostId,
    agent,
    datapath,
    metricsPort: metrics.port,
    adminPort: admin.port,
    tunnelPort: datapath.tunnelPort,
    health,
    hostToken: refresher,
    natLeases,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(tick);
      watch.stop();
      refresher?.stop();
      await natLeases.stop();
      heartbeat.stop();
      await closeServer(admin.server);
      await closeServer(metrics.server);
      await agent.stop();
      log.info("agent stopped");
    },
  };
}

function readTokenFile(read: () => string | undefined): string | undefined {
  try {
    return read();
  } catch {
    return undefined; // not there yet: the watch reads it again on every attempt
  }
}

/** A gateway registers its WAN endpoint; without --wan-ip that is its tunnel address. */
function wanOf(cfg: AgentConfig): { wanIp: string; wanPort: number } {
  if (cfg.role !== "gateway") return { wanIp: "", wanPort: 0 };
  return { wanIp: cfg.wanIp ?? cfg.tunnelIp, wanPort: cfg.wanPort };
}
