// `isthmus site revoke NAME`: one log entry that cuts the site off on every coordinator node — its
// next call is refused and its open streams end. Re-admitting it takes a new `site add` + `site join`.
import type { federationpb } from "@isthmus/schema";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";

export async function runSiteRevoke(name: string, f: ConnectionFlags & { output: string }): Promise<number> {
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(f));
  } catch (err) {
    console.error(`isthmus site revoke: ${(err as Error).message}`);
    return 2;
  }
  try {
    const res = await client.rpc<federationpb.RevokeSiteRequest, federationpb.RevokeSiteResponse>(
      (c) => c.revokeSite,
      { name },
    );
    if (f.output === "json") {
      console.log(JSON.stringify({ site: name, revoked: true, index: res.index }));
    } else {
      console.log(
        `site "${name}" revoked at log index ${res.index}; every coordinator refuses it from then on`,
      );
    }
    return 0;
  } catch (err) {
    console.error(`isthmus site revoke ${name}: ${describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}
