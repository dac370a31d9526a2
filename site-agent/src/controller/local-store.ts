// Site-local hosts and ports in the database, and the writes the site API makes to them. Each
// write runs in the controller's write queue, under the lease fence, and puts the port's
// translated topology (and its change-log entry) in the same transaction as the row itself.
import { randomUUID } from "node:crypto";
import { topologypb } from "@isthmus/schema";
import type { Tx } from "./db/database.js";
import {
  LOCAL_TUNNEL_KEY_MAX,
  LOCAL_TUNNEL_KEY_MIN,
  type LocalHost,
  type LocalPortBinding,
} from "./local-objects.js";
import { keyString, topologyRefOf } from "./objects.js";
import { type TopologyDelta, writeTopology } from "./topology-store.js";
import type { WriteContext } from "./write-context.js";

const ROLE_NAMES: Record<number, string> = {
  [topologypb.HostRole.HOST_ROLE_HOST]: "host",
  [topologypb.HostRole.HOST_ROLE_GATEWAY]: "gateway",
};

function roleFromName(name: string): topologypb.HostRole {
  return name === "gateway" ? topologypb.HostRole.HOST_ROLE_GATEWAY : topologypb.HostRole.HOST_ROLE_HOST;
}

export function hostTopology(h: LocalHost): topologypb.TopologyObject {
  return {
    host: {
      id: h.id,
      name: h.name,
      tunnelIp: h.tunnelIp,
      tunnelPort: h.tunnelPort,
      role: h.role,
      alive: true,
      wanIp: h.wanIp,
      wanPort: h.wanPort,
    },
  };
}

export async function loadLocalObjects(tx: Tx): Promise<{ hosts: LocalHost[]; ports: LocalPortBinding[] }> {
  const hosts = (await tx.query("SELECT * FROM hosts")).rows.map(
    (r): LocalHost => ({
      id: r.id,
      name: r.name,
      tunnelIp: r.tunnel_ip,
      tunnelPort: Number(r.tunnel_port),
      role: roleFromName(r.role),
      wanIp: r.wan_ip,
      wanPort: Number(r.wan_port),
    }),
  );
  const ports = (await tx.query("SELECT * FROM ports")).rows.map(
    (r): LocalPortBinding => ({
      id: r.id,
      name: r.name,
      networkId: r.network_id,
      hostId: r.host_id,
      interfaceName: r.interface_name,
      mac: r.mac,
      ips: r.ips as string[],
      securityGroupIds: r.security_group_ids as string[],
      tunnelKey: Number(r.tunnel_key),
    }),
  );
  return { hosts, ports };
}

/** A request that cannot be carried out as asked; the message names the field. */
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

export class LocalWriter {
  private keyCursor = LOCAL_TUNNEL_KEY_MIN;

  constructor(private readonly ctx: WriteContext) {}

  async registerHost(input: Omit<LocalHost, "id">): Promise<LocalHost> {
    return this.write("register-host", async (tx) => {
      const existing = this.ctx.index.localHosts().find((h) => h.name === input.name);
      // Re-registering a host (agent restart, new address) keeps its id.
      const host: LocalHost = { ...input, id: existing?.id ?? randomUUID() };
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
      const revision = await writeTopology(
        tx,
        { upserts: [hostTopology(host)], deletes: [] },
        "local",
        this.ctx.changeLog,
      );
      return {
        result: host,
        revision,
        commit: () => this.ctx.index.setHost(host),
      };
    });
  }

  async createPort(
    input: Omit<LocalPortBinding, "id" | "tunnelKey"> & { id?: string },
  ): Promise<LocalPortBinding> {
    if (input.hostId !== "" && !this.ctx.index.localHost(input.hostId)) {
      throw new LocalRequestError("host", `host ${input.hostId} is not registered at this site`, "not-found");
    }
    if (this.ctx.index.localPorts().some((p) => p.name === input.name)) {
      throw new LocalRequestError("name", `a port named "${input.name}" already exists`, "exists");
    }
    return this.write("create-port", async (tx) => {
      const port: LocalPortBinding = { ...input, id: input.id || randomUUID(), tunnelKey: this.nextKey() };
      await tx.query("INSERT INTO tunnel_keys (tunnel_key, port_id) VALUES ($1, $2)", [
        port.tunnelKey,
        port.id,
      ]);
      await this.upsertPortRow(tx, port);
      const delta = this.portDelta(undefined, port);
      const revision = await writeTopology(tx, delta, "local", this.ctx.changeLog);
      return { result: port, revision, commit: () => this.ctx.index.setPort(port) };
    });
  }

  async bindPort(portId: string, hostId: string, interfaceName: string): Promise<LocalPortBinding> {
    const old = this.requirePort(portId);
    if (!this.ctx.index.localHost(hostId)) {
      throw new LocalRequestError("host", `host ${hostId} is not registered at this site`, "not-found");
    }
    if (interfaceName === "")
      throw new LocalRequestError("interface_name", "interface_name must not be empty");
    return this.updatePort("bind-port", old, { ...old, hostId, interfaceName });
  }

  async unbindPort(portId: string): Promise<LocalPortBinding> {
    const old = this.requirePort(portId);
    return this.updatePort("unbind-port", old, { ...old, hostId: "", interfaceName: "" });
  }

  async deletePort(portId: string): Promise<LocalPortBinding> {
    const old = this.requirePort(portId);
    return this.write("delete-port", async (tx) => {
      await tx.query("DELETE FROM ports WHERE id = $1", [old.id]);
      await tx.query("DELETE FROM tunnel_keys WHERE port_id = $1", [old.id]);
      const revision = await writeTopology(tx, this.portDelta(old, undefined), "local", this.ctx.changeLog);
      return { result: old, revision, commit: () => this.ctx.index.removePort(old.id) };
    });
  }

  private requirePort(id: string): LocalPortBinding {
    const p = this.ctx.index.localPort(id);
    if (!p) throw new LocalRequestError("port_id", `port ${id} does not exist at this site`, "not-found");
    return p;
  }

  private updatePort(
    label: string,
    old: LocalPortBinding,
    next: LocalPortBinding,
  ): Promise<LocalPortBinding> {
    return this.write(label, async (tx) => {
      await this.upsertPortRow(tx, next);
      const revision = await writeTopology(tx, this.portDelta(old, next), "local", this.ctx.changeLog);
      return { result: next, revision, commit: () => this.ctx.index.setPort(next) };
    });
  }

  private async upsertPortRow(tx: Tx, p: LocalPortBinding): Promise<void> {
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

  /**
   * What a port's change does to the topology: the translation of its new state, plus deletes of
   * whatever its old state's translation produced that the new one no longer does.
   */
  private portDelta(old: LocalPortBinding | undefined, next: LocalPortBinding | undefined): TopologyDelta {
    const t = this.ctx.translator;
    const after = next ? t.translateLocalPort(this.ctx.index, next) : { upserts: [], deletes: [] };
    const before = old ? t.translateLocalPort(this.ctx.index, old) : { upserts: [], deletes: [] };
    const still = new Set(after.upserts.map((o) => refKey(topologyRefOf(o))));
    const gone = before.upserts.map(topologyRefOf).filter((r) => !still.has(refKey(r)));
    const deletes = [
      ...after.deletes,
      ...gone.filter((r) => !after.deletes.some((d) => refKey(d) === refKey(r))),
    ];
    return { upserts: after.upserts, deletes };
  }

  /** Lowest free site-local key at or after the cursor, wrapping once. */
  private nextKey(): number {
    const used = new Set(this.ctx.index.localPorts().map((p) => p.tunnelKey));
    const span = LOCAL_TUNNEL_KEY_MAX - LOCAL_TUNNEL_KEY_MIN + 1;
    for (let i = 0; i < span; i++) {
      const k = LOCAL_TUNNEL_KEY_MIN + ((this.keyCursor - LOCAL_TUNNEL_KEY_MIN + i) % span);
      if (!used.has(k)) {
        this.keyCursor = k + 1 > LOCAL_TUNNEL_KEY_MAX ? LOCAL_TUNNEL_KEY_MIN : k + 1;
        return k;
      }
    }
    throw new LocalRequestError("tunnel_key", `all ${span} site-local tunnel keys are in use`, "exhausted");
  }

  /** Runs one local write in the queue and under the fence; updates memory only after commit. */
  private write<T>(
    label: string,
    body: (tx: Tx) => Promise<{ result: T; revision: number | undefined; commit: () => void }>,
  ): Promise<T> {
    const ctx = this.ctx;
    return ctx.queue.run(async () => {
      const out = await ctx.db.tx(label, async (tx) => {
        await ctx.fence.check(tx);
        const r = await body(tx);
        await ctx.beforeCommit?.(tx, label);
        return r;
      });
      out.commit();
      if (out.revision !== undefined) ctx.onCommitted(out.revision);
      return out.result;
    });
  }
}

function refKey(r: topologypb.TopologyRef): string {
  return keyString(r.kind, r.id);
}
