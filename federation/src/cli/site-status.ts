// `isthmus site status`: asks a site controller (SiteService.Status) how current the site is —
// which replica is active, the applied intent index, and how long it has been without a
// coordinator.
import { readFile } from "node:fs/promises";
import { credentials, Metadata } from "@grpc/grpc-js";
import { sitepb } from "@isthmus/schema";

export interface SiteStatusOptions {
  controller: string;
  tokenFile: string;
  json?: boolean;
  timeout: string;
}

export async function runSiteStatus(opts: SiteStatusOptions): Promise<number> {
  let token: string;
  try {
    token = (await readFile(opts.tokenFile, "utf8")).trim();
  } catch (err) {
    console.error(`isthmus site status: cannot read token file ${opts.tokenFile}: ${(err as Error).message}`);
    return 2;
  }
  const client = new sitepb.SiteServiceClient(opts.controller, credentials.createInsecure());
  const md = new Metadata();
  md.set("authorization", `Bearer ${token}`);
  try {
    const s = await new Promise<sitepb.SiteStatusResponse>((resolve, reject) =>
      client.status(
        {},
        md,
        { deadline: Date.now() + Number(opts.timeout) },
        (err: Error | null, res: sitepb.SiteStatusResponse) => (err ? reject(err) : resolve(res)),
      ),
    );
    if (opts.json) {
      console.log(JSON.stringify(sitepb.SiteStatusResponse.toJSON(s), null, 2));
      return 0;
    }
    const contact = s.lastFederationContactUnixMs
      ? new Date(s.lastFederationContactUnixMs).toISOString()
      : "never since start";
    console.log(`site:               ${s.site}`);
    console.log(
      `controller:         ${s.controllerId} (${s.active ? `active, lease token ${s.leaseToken}` : "standby"})`,
    );
    console.log(`applied index:      ${s.appliedIndex}`);
    const federation = s.federationConnected
      ? `connected to ${s.federationAddress}`
      : !s.active
        ? "followed by the active replica"
        : s.federationAddress === "" && s.stalenessMs === 0
          ? "not following a federation"
          : `DISCONNECTED for ${Math.round(s.stalenessMs / 1000)} s`;
    console.log(`federation:         ${federation}`);
    console.log(`last contact:       ${contact}`);
    console.log(`topology revision:  ${s.topologyRevision}`);
    console.log(`hosts / ports:      ${s.hosts} (${s.hostsAlive} alive) / ${s.ports}`);
    console.log(`watch streams:      ${s.watchStreams}`);
    console.log(`detail:             ${s.detail}`);
    for (const p of s.translationProblems) console.log(`problem:            ${p}`);
    return 0;
  } catch (err) {
    console.error(`isthmus site status: ${opts.controller}: ${(err as Error).message}`);
    return 1;
  } finally {
    client.close();
  }
}
