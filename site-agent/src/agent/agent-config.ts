// Configuration of `isthmus agent`: defaults, YAML file (`agent:` section), ISTHMUS_AGENT__* env
// vars, then flags. Bounds of every table and queue the agent keeps are here.

import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { z } from "zod";
import { UPCALL_BUSY_POLL_MAX_US } from "./kernel/upcall-ring.js";

const hostPort = z.string().regex(/^[^:\s]+:\d{1,5}$/, "expected host:port");

export const AgentConfigSchema = z.object({
  agent: z
    .object({
      /** This host's id in the site topology (Host.id), when it is already registered. */
      host: z.string().min(1).optional(),
      /** Register under this host name (SiteService.RegisterHost) instead of naming an id. */
      name: z.string().min(1).optional(),
      /** An operator's admin token file, needed to register. */
      adminTokenFile: z.string().optional(),
      /** The site controller's gRPC address (TopologyService). */
      controller: hostPort,
      /** A file holding the host token the controller issued at registration (sent as a bearer token). */
      tokenFile: z.string().optional(),
      tunnelIp: z.string().refine((s) => isIP(s) === 4, "expected an IPv4 address"),
      tunnelPort: z.number().int().min(0).max(65535).default(4789),
      role: z.enum(["host", "gateway"]).default("host"),
      /** A gateway's address as other sites' gateways reach it (default: the tunnel address). */
      wanIp: z
        .string()
        .refine((s) => isIP(s) === 4, "expected an IPv4 address")
        .optional(),
      /** A gateway's WAN VXLAN port (default: the controller's, 4789). */
      wanPort: z.number().int().min(0).max(65535).default(0),
      /** Prometheus /metrics and /healthz. */
      metricsListen: hostPort.default("127.0.0.1:9480"),
      /** Local admin endpoint (`isthmus agent flows`); keep it on loopback. */
      adminListen: hostPort.default("127.0.0.1:9481"),
      flows: z
        .object({
          max: z.number().int().positive().default(100_000),
          exactCache: z.number().int().min(0).default(65_536),
          masks: z.number().int().positive().default(256),
          idleTimeoutMs: z.number().int().positive().default(60_000),
          hardTimeoutMs: z.number().int().min(0).default(0),
        })
        .default({ max: 100_000, exactCache: 65_536, masks: 256, idleTimeoutMs: 60_000, hardTimeoutMs: 0 }),
      upcalls: z
        .object({
          perPort: z.number().int().positive().default(256),
          total: z.number().int().positive().default(4096),
        })
        .default({ perPort: 256, total: 4096 }),
      /**
       * userspace: TypeScript datapath; kernel: TC eBPF fast path (root, clang-built object);
       * auto: kernel where it can load, else userspace with a log line saying why.
       */
      datapath: z.enum(["userspace", "kernel", "auto"]).default("userspace"),
      kernel: z
        .object({
          /** bpffs mount for the programs' pins (mounted when it is not one yet). */
          bpffs: z.string().default("/sys/fs/bpf"),
          /** Where attachments are recorded so a restart after a crash removes them. */
          stateDir: z.string().default("/run/isthmus"),
          /** Upcalls per second per port the programs let through (the rest are dropped, counted). */
          upcallsPerSecond: z.number().int().positive().default(2000),
          upcallBurst: z.number().int().positive().default(256),
          /**
           * EEVDF time slice (µs) asked for the agent's event-loop thread (Linux ≥ 6.12; 0 = the
           * kernel's default): short, so the thread preempts on wake-up when a first packet arrives.
           */
          threadSliceUs: z.number().int().min(0).max(100_000).default(100),
          /** Misses reach the agent through a BPF ring buffer (false: always the upcall veth). */
          upcallRing: z.boolean().default(true),
          /**
           * Busy polling of the upcall ring (µs, 0 = off): after each miss the agent's event loop
           * keeps reading the ring without sleeping for this long, so the next miss of a burst of
           * new flows needs no wake-up of its thread. Costs a CPU kept busy for the window after
           * every miss (docs/kernel-datapath.md, ninth pass); needs the ring.
           */
          upcallBusyPollUs: z.number().int().min(0).max(UPCALL_BUSY_POLL_MAX_US).default(0),
          /**
           * SCHED_FIFO priority (1-99) the agent's thread busy-polls at, 0 = off: while a window is
           * open no ordinary task preempts it (a CPU is the agent's for the window); root or
           * CAP_SYS_NICE. Refused by the kernel: polling goes on unprivileged, and says so.
           */
          upcallBusyPollRealtime: z.number().int().min(0).max(99).default(0),
          /**
           * A network namespace (a path such as /run/netns/underlay) that holds the tunnel
           * address and the VM ports: the datapath's devices and programs are made there while
           * the agent itself (and its connection to the controller) stays where it runs.
           */
          netns: z
            .string()
            .regex(/^\//, "an absolute path to a network namespace file, e.g. /run/netns/underlay")
            .refine((p) => existsSync(p), "no such network namespace file")
            .optional(),
        })
        .default({
          bpffs: "/sys/fs/bpf",
          stateDir: "/run/isthmus",
          upcallsPerSecond: 2000,
          upcallBurst: 256,
          threadSliceUs: 100,
          upcallRing: true,
          upcallBusyPollUs: 0,
          upcallBusyPollRealtime: 0,
        }),
      /** How often an active connection's flow state is re-sent to peers. */
      stateRefreshMs: z.number().int().positive().default(1000),
      /**
       * Nice value for the agent's event-loop thread (-20..19; unset: on the kernel path -10 when the process may
       * raise its priority, else left as started — see DEFAULT_AGENT_NICE). Every new
       * flow's first packet waits for this thread, so on hosts whose VMs keep the CPUs busy a
       * negative value keeps flow setup from queueing behind them (root, or CAP_SYS_NICE).
       */
      nice: z.number().int().min(-20).max(19).optional(),
    })
    .refine((a) => a.host !== undefined || (a.name !== undefined && a.adminTokenFile !== undefined), {
      message: "give either --host <id> (already registered) or --name <host name> with --admin-token-file",
      path: ["host"],
    }),
});

export type AgentConfig = z.infer<typeof AgentConfigSchema>["agent"];

export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(":");
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}
