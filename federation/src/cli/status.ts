// `isthmus status`: the coordinator group (members, leader, term, commit index) and every site's
// sync state (applied index, lag behind the commit index, when it was last heard from).
import { federationpb } from "@isthmus/schema";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";
import { ago, formatTable } from "./table.js";

export interface StatusFlags extends ConnectionFlags {
  output: string;
}

const STATE: Record<number, string> = { 0: "-", 1: "pending", 2: "active", 3: "revoked" };

export async function runStatus(flags: StatusFlags): Promise<number> {
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(flags));
  } catch (err) {
    console.error(`isthmus status: ${(err as Error).message}`);
    return 2;
  }
  try {
    const st = await client.rpc((c) => c.status, {});
    if (flags.output === "json") {
      console.log(JSON.stringify(federationpb.StatusResponse.toJSON(st), null, 2));
      return 0;
    }
    console.log(
      `node ${st.nodeId} (${st.role}), leader ${st.leaderId || "unknown"}${st.leaderAddress ? ` at ${st.leaderAddress}` : ""}, term ${st.term}, commit ${st.commitIndex}, applied ${st.appliedIndex}`,
    );
    console.log("");
    console.log(
      formatTable(
        ["MEMBER", "ADDRESS", "VOTER", "LEADER", "MATCH"],
        st.members.map((m) => [
          m.id,
          m.address || "-",
          m.voter ? "yes" : "learner",
          m.leader ? "*" : "",
          m.matchIndex ? String(m.matchIndex) : "-",
        ]),
      ),
    );
    console.log("");
    console.log(
      st.sites.length === 0
        ? "no sites"
        : formatTable(
            ["SITE", "STATE", "APPLIED", "LAG", "LAST HEARD", "HOSTS", "DB"],
            st.sites.map((s) => [
              s.site,
              STATE[s.state] ?? "?",
              String(s.appliedIndex),
              String(s.lag),
              ago(s.lastHeardUnixMs),
              s.health ? `${s.health.hostsAlive}/${s.health.hostsTotal}` : "-",
              s.health ? (s.health.databaseOk ? "ok" : "DOWN") : "-",
            ]),
          ),
    );
    return 0;
  } catch (err) {
    console.error(`isthmus status: ${describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}
