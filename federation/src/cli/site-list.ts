// `isthmus site list`: every site the federation knows, its state, its registered key (thumbprint)
// and how far it has applied intent. A table for people, `-o json` for scripts. Viewer or admin.
import { type federationpb, intentpb } from "@isthmus/schema";
import { calculateJwkThumbprint, type JWK } from "jose";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";
import { ago, formatTable } from "./table.js";

export const SITE_STATE_NAMES: Record<number, string> = {
  [intentpb.SiteState.SITE_STATE_UNSPECIFIED]: "unknown",
  [intentpb.SiteState.SITE_STATE_PENDING]: "pending",
  [intentpb.SiteState.SITE_STATE_ACTIVE]: "active",
  [intentpb.SiteState.SITE_STATE_REVOKED]: "revoked",
};

/** The RFC 7638 thumbprint of a registered key (what `site join` printed as the key id). */
async function keyId(jwkJson: string): Promise<string | null> {
  if (!jwkJson) return null;
  try {
    return await calculateJwkThumbprint(JSON.parse(jwkJson) as JWK, "sha256");
  } catch {
    return "(unreadable)";
  }
}

export async function runSiteList(f: ConnectionFlags & { output: string }): Promise<number> {
  if (f.output !== "table" && f.output !== "json") {
    console.error(`isthmus site list: -o must be table or json, got "${f.output}"`);
    return 2;
  }
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(f));
  } catch (err) {
    console.error(`isthmus site list: ${(err as Error).message}`);
    return 2;
  }
  try {
    const res = await client.rpc<federationpb.ListSitesRequest, federationpb.ListSitesResponse>(
      (c) => c.listSites,
      {},
    );
    const sites = [...res.sites].sort((a, b) => (a.meta?.name ?? "").localeCompare(b.meta?.name ?? ""));
    const rows = [];
    for (const s of sites) {
      rows.push({
        name: s.meta?.name ?? "",
        id: s.meta?.id ?? "",
        state: SITE_STATE_NAMES[s.state] ?? String(s.state),
        region: s.region,
        key: await keyId(s.publicKeyJwk),
        appliedIndex: s.appliedIndex,
        lag: Math.max(0, res.index - s.appliedIndex),
        lastHeardUnixMs: s.lastHeardUnixMs,
        revision: s.meta?.revision ?? 0,
      });
    }
    if (f.output === "json") {
      console.log(JSON.stringify({ index: res.index, sites: rows }, null, 2));
      return 0;
    }
    if (rows.length === 0) {
      console.log("no sites; add one with `isthmus site add NAME`");
      return 0;
    }
    console.log(
      formatTable(
        ["NAME", "STATE", "REGION", "KEY", "APPLIED", "LAG", "LAST HEARD"],
        rows.map((r) => [
          r.name,
          r.state,
          r.region || "-",
          r.key ? r.key.slice(0, 12) : "-",
          String(r.appliedIndex),
          String(r.lag),
          ago(r.lastHeardUnixMs),
        ]),
      ),
    );
    return 0;
  } catch (err) {
    console.error(`isthmus site list: ${describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}
