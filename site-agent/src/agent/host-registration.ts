// Registration with the site controller (SiteService.RegisterHost, schema isthmus/v1/site.proto):
// the agent announces its name, tunnel endpoint and role with an operator's admin token and gets
// its Host (the id every topology object refers to) and the host token it watches with. Retries
// with backoff while the controller is unreachable; registering again keeps the id.
import { writeFileSync } from "node:fs";
import { credentials, Metadata, status } from "@grpc/grpc-js";
import { type Logger, sitepb, topologypb } from "@isthmus/schema";

export interface Registration {
  host: topologypb.Host;
  hostToken: string;
}

export interface RegisterOptions {
  controller: string;
  name: string;
  adminToken: string;
  tunnelIp: string;
  tunnelPort: number;
  role: "host" | "gateway";
  /** Where to keep the host token (mode 0600), so a restart can watch without an admin token. */
  tokenFile?: string;
  log: Logger;
  /** Give up after this long (0 = keep trying). */
  timeoutMs?: number;
}

export async function registerHost(o: RegisterOptions): Promise<Registration> {
  const client = new sitepb.SiteServiceClient(o.controller, credentials.createInsecure());
  const md = new Metadata();
  md.set("authorization", `Bearer ${o.adminToken}`);
  const req: sitepb.RegisterHostRequest = {
    name: o.name,
    tunnelIp: o.tunnelIp,
    tunnelPort: o.tunnelPort,
    role: o.role === "gateway" ? topologypb.HostRole.HOST_ROLE_GATEWAY : topologypb.HostRole.HOST_ROLE_HOST,
    wanIp: "",
    wanPort: 0,
  };
  const deadline = o.timeoutMs ? Date.now() + o.timeoutMs : Number.POSITIVE_INFINITY;
  let backoff = 200;
  try {
    for (;;) {
      try {
        const res = await new Promise<sitepb.RegisterHostResponse>((resolve, reject) =>
          client.registerHost(req, md, { deadline: Date.now() + 5000 }, (err, r) =>
            err ? reject(err) : resolve(r),
          ),
        );
        if (!res.host || res.host.id === "" || res.hostToken === "") {
          throw new Error("RegisterHost answered without a host id or token");
        }
        if (o.tokenFile) writeFileSync(o.tokenFile, `${res.hostToken}\n`, { mode: 0o600 });
        o.log.info({ hostId: res.host.id, name: o.name }, "registered with the site controller");
        return { host: res.host, hostToken: res.hostToken };
      } catch (err) {
        const e = err as Error & { code?: number };
        // Refusals that retrying cannot fix: say so and stop.
        if (
          e.code === status.UNAUTHENTICATED ||
          e.code === status.PERMISSION_DENIED ||
          e.code === status.INVALID_ARGUMENT
        ) {
          throw new Error(`site controller refused RegisterHost for "${o.name}": ${e.message}`);
        }
        if (Date.now() + backoff > deadline)
          throw new Error(`cannot register with ${o.controller}: ${e.message}`);
        o.log.warn({ err: e.message }, "registration failed; retrying");
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
      }
    }
  } finally {
    client.close();
  }
}
