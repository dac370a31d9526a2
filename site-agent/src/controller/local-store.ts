// Site-local hosts and ports in the database, and the writes the site API makes to them. Each
// write runs in the controller's write queue under the lease fence: it updates the in-memory
// index, translates what changed, and commits the row together with the resulting topology
// revision — or puts the index back when the transaction fails.
import { randomUUID } from "node:crypto";
import { topologypb } from "@isthmus/schema";
import type { Database, Tx } from "./db/database.js";
import { writeTopologyChange } from "./topology-store.js";
import type { LocalPortBinding, TopologyDelta } from "./translate/index.js";
import type { WriteContext } from "./write-context.js";

const ROLE_NAMES: Record<number, string> = {
  [topologypb.HostRole.HOST_ROLE_HOST]: "host",
  [topologypb.HostRole.HOST_ROLE_GATEWAY]: "gateway",
};

function roleFromName(name: string): topologypb.HostRole {
  return name === "gateway" ? topologypb.HostRole.HOST_ROLE_GATEWAY : topologypb.HostRole.HOST_ROLE_HOST;
}

function hostOfRow(r: Record<string, unknown>): topologypb.Host {
  return topologypb.Host.fromPartial({
    id: r.id as string,
    name: r.name as string,
    tunnelIp: r.tunnel_ip as string,
    tunnelPort: Number(r.tunnel_port),
    role: roleFromName(r.role as string),
    alive: r.alive !== false,
    wanIp: r.wan_ip as string,
    wanPort: Number(r.wan_port),
  });
}

function portOfRow(r: Record<string, unknown>): LocalPortBinding {
  return {
    id: r.id as string,
    name: r.name as string,
    networkId: r.network_id as string,
    hostId: r.host_id as string,
    interfaceName: r.interface_name as string,
    mac: r.mac as string,
    ips: r.ips as string[],
    securityGroupIds: r.security_group_ids as string[],
    tunnelKey: Number(r.tunnel_key),
    adminStateUp: true,
  };
}

export async function loadLocalObjects(
  tx: Tx,
): Promise<{ hosts: topologypb.Host[]; ports: LocalPortBinding[] }> {
  const hosts = (
    await tx.query(
      "SELECT h.*, (d.host_id IS NULL) AS alive FROM hosts h LEFT JOIN hosts_down d ON d.host_id = h.id",
    )
  ).rows.map(hostOfRow);
  const ports = (await tx.query("SELECT * FROM ports")).rows.map(portOfRow);
  return { hosts, ports };
}

/**
 * Reads for SiteService's List calls, from the database in one read-only transaction, so either
 * replica answers with committed state (the standby holds no current in-memory copy).
 */
export const localReads = {
  async ports(db: Database, filter: { hostId: string; networkId: string }): Promise<LocalPortBinding[]> {
    const rows = await db.tx(
      "list-ports",
      (tx) =>
        tx.query("SELECT * FROM ports WHERE ($1 = '' OR host_id = $1) AND ($2 = '' OR network_id = $2)", [
          filter.hostId,
          filter.networkId,
        ]),
      { readOnly: true },
    );
    return rows.rows.map(portOfRow).sort((a, b) => a.name.localeCompare(b.name));
  },
  async hosts(db: Database): Promise<topologypb.Host[]> {
    const hosts = await db.tx("list-hosts", async (tx) => (await loadLocalObjects(tx)).hosts, {
      readOnly: true,
    });
    return hosts.sort((a, b) => a.name.localeCompare(b.name));
  },
};

/** A request that cannot be carried out as asked; `field` names the offending request field. */
export class LocalRequestError extends Error {
  constructor(
    readonly field: string,
    message: string,
    readonly kind: "invalid" | "not-found" | "exists" | "exhausted" = "invalid",
  ) {
    super(message);
    this.name = "LocalRequestError";
  }
}

export type HostInput = Omit<topologypb.Host, "id" | "alive">;
export type PortInput = Omit<LocalPortBinding, "id" | "tunnelKey" | "adminStateUp"> & { id?: string };

interface Step<T> {
  result: T;
  delta: TopologyDelta;
  sql: (tx: Tx) => Promise<void>;
  revert: () => void;
}

export class LocalWriter {
  constructor(private readonly ctx: WriteContext) {}

  registerHost(input: HostInput): Promise<topologypb.Host> {
    return this.write("register-host", () => {
      const index = this.ctx.index;
      const existing = [...index.list("host")].find((h) => h.name === input.name);
      // Re-registering a host (agent restart, new address) keeps its id.
      const host = topologypb.Host.fromPartial({ ...input, id: existing?.id ?? randomUUID(), alive: true });
      const prior = index.putHost(host);
      return {
        result: host,
        delta: this.ctx.translator.translateHost(index, host.id, prior),
        revert: () => (prior ? index.putHost(prior) : index.removeHost(host.id)),
        sql: async (tx) => {
          await tx.query(
            `INSERT INTO hosts (id, name, tunnel_ip, tunnel_port, role, wan_ip, wan_port, registered_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, now())
             ON CONFLICT (id) DO UPDATE SET tunnel_ip = excluded.tunnel_ip, tunnel_port = excluded.tunnel_port,
               role = excluded.role, wan_ip = excluded.wan_ip, wan_port = excluded.wan_port`,
            [
              host.id,
              host.name,
              host.tunnelIp,
              host.tunnelPort,
              ROLE_NAMES[host.role] ?? "host",
              host.wanIp,
              host.wanPort,
            ],
          );
          // Registering is a sign of life.
          await tx.query(
            `INSERT INTO host_heartbeats (host_id, last_seen_at) VALUES ($1, now())
             ON CONFLICT (host_id) DO UPDATE SET last_seen_at = excluded.last_seen_at`,
            [host.id],
          );
          await tx.query("DELETE FROM hosts_down WHERE host_id = $1", [host.id]);
        },
      };
    });
  }

  /**
   * Marks a host alive or not (heartbeats stopped or returned): the Host in the topology, and
   * whatever follows the gateway host choice, change in one revision. Returns whether it changed.
   */
  setHostAlive(hostId: string, alive: boolean): Promise<boolean> {
    return this.write("host-alive", () => {
      const index = this.ctx.index;
      const old = index.get("host", hostId);
      if (!old)
        throw new LocalRequestError("host_id", `host ${hostId} is not registered at this site`, "not-found");
      if ((old.alive ?? true) === alive) {
        return {
          result: false,
          delta: { upserts: [], deletes: [], problems: [] },
          sql: async () => {},
          revert: () => {},
        };
      }
      const prior = index.putHost({ ...old, alive });
      return {
        result: true,
        delta: this.ctx.translator.translateHost(index, hostId, prior),
        revert: () => index.putHost(old),
        sql: async (tx) => {
          if (alive) await tx.query("DELETE FROM hosts_down WHERE host_id = $1", [hostId]);
          else
            await tx.query(
              "INSERT INTO hosts_down (host_id, since) VALUES ($1, now()) ON CONFLICT (host_id) DO NOTHING",
              [hostId],
            );
        },
      };
    });
  }

  createPort(input: PortInput): Promise<LocalPortBinding> {
    return this.write("create-port", () => {
      const index = this.ctx.index;
      if (input.hostId !== "") this.requireHost(input.hostId);
      if (index.localPortNamed(input.name)) {
        throw new LocalRequestError("name", `a port named "${input.name}" already exists`, "exists");
      }
      const id = input.id || randomUUID();
      if (index.get("localPort", id))
        throw new LocalRequestError("id", `port ${id} already exists`, "exists");
      const port: LocalPortBinding = { ...input, id, tunnelKey: this.nextKey(), adminStateUp: true };
      return {
        ...this.portStep(undefined, port),
        sql: async (tx) => {
          await tx.query("INSERT INTO tunnel_keys (tunnel_key, port_id) VALUES ($1, $2)", [
            port.tunnelKey,
            port.id,
          ]);
          await upsertPortRow(tx, port);
        },
      };
    });
  }

  bindPort(portId: string, hostId: string, interfaceName: string): Promise<LocalPortBinding> {
    return this.write("bind-port", () => {
      const old = this.requirePort(portId);
      this.requireHost(hostId);
      if (interfaceName === "")
        throw new LocalRequestError("interface_name", "interface_name must not be empty");
      const next = { ...old, hostId, interfaceName };
      return { ...this.portStep(old, next), sql: (tx) => upsertPortRow(tx, next) };
    });
  }

  unbindPort(portId: string): Promise<LocalPortBinding> {
    return this.write("unbind-port", () => {
      const old = this.requirePort(portId);
      const next = { ...old, hostId: "", interfaceName: "" };
      return { ...this.portStep(old, next), sql: (tx) => upsertPortRow(tx, next) };
    });
  }

  deletePort(portId: string): Promise<LocalPortBinding> {
    return this.write("delete-port", () => {
      const old = this.requirePort(portId);
      return {
        ...this.portStep(old, undefined),
        result: old,
        sql: async (tx) => {
          await tx.query("DELETE FROM ports WHERE id = $1", [old.id]);
          await tx.query("DELETE FROM tunnel_keys WHERE port_id = $1", [old.id]);
        },
      };
    });
  }

  private requirePort(id: string): LocalPortBinding {
    if (id === "") throw new LocalRequestError("port_id", "port_id must not be empty");
    const p = this.ctx.index.get("localPort", id);
    if (!p) throw new LocalRequestError("port_id", `port ${id} does not exist at this site`, "not-found");
    return p;
  }

  private requireHost(id: string): void {
    if (!this.ctx.index.get("host", id)) {
      throw new LocalRequestError("host", `host ${id} is not registered at this site`, "not-found");
    }
  }

  /** Moves the index from `old` to `next` (undefined = absent) and translates the difference. */
  private portStep(
    old: LocalPortBinding | undefined,
    next: LocalPortBinding | undefined,
  ): Omit<Step<LocalPortBinding>, "sql"> {
    const index = this.ctx.index;
    const id = (next ?? old)!.id;
    const prior = next ? index.putLocalPort(next) : index.removeLocalPort(id);
    return {
      result: (next ?? old)!,
      delta: this.ctx.translator.translateLocalPort(index, id, prior),
      revert: () => (prior ? index.putLocalPort(prior) : index.removeLocalPort(id)),
    };
  }

  /** A site-local key no VM port or uplink port holds (the allocator is shared with intent). */
  private nextKey(): number {
    const key = this.ctx.keys.begin()();
    if (key === 0) {
      throw new LocalRequestError(
        "tunnel_key",
        `all ${this.ctx.keys.size} site-local tunnel keys are in use`,
        "exhausted",
      );
    }
    return key;
  }

  /**
   * Runs one local write in the queue: `step` validates, changes the index and translates (inside
   * the queue, so it sees every earlier write); the transaction commits the rows and topology.
   */
  private write<T>(label: string, step: () => Step<T>): Promise<T> {
    const ctx = this.ctx;
    return ctx.queue.run(async () => {
      const s = step();
      if (s.delta.problems.length > 0) ctx.onProblems?.(s.delta.problems);
      let change: topologypb.TopologyChange | undefined;
      try {
        change = await ctx.db.tx(label, async (tx) => {
          await ctx.fence.check(tx);
          await s.sql(tx);
          const r = await writeTopologyChange(tx, s.delta, "local", ctx.changeLog);
          await ctx.beforeCommit?.(tx, label);
          return r;
        });
      } catch (err) {
        s.revert();
        throw err;
      }
      if (change !== undefined) ctx.onCommitted(change.revision, change);
      return s.result;
    });
  }
}

async function upsertPortRow(tx: Tx, p: LocalPortBinding): Promise<void> {
  await tx.query(
    `INSERT INTO ports (id, name, network_id, host_id, interface_name, mac, ips, security_group_ids, tunnel_key, created_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
     ON CONFLICT (id) DO UPDATE SET host_id = excluded.host_id, interface_name = excluded.interface_name,
       mac = excluded.mac, ips = excluded.ips, security_group_ids = excluded.security_group_ids`,
    [
      p.id,
      p.name,
      p.networkId,
      p.hostId,
      p.interfaceName,
      p.mac,
      JSON.stringify(p.ips),
      JSON.stringify(p.securityGroupIds),
      p.tunnelKey,
    ],
  );
}
