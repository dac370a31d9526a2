// `isthmus coordinator members add|remove`: online membership change of the coordinator's Raft
// group, sent to the leader (the client follows redirects).
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";
import { formatTable } from "./table.js";

export interface MembersFlags extends ConnectionFlags {
  learner?: boolean;
  output: string;
}

export async function runMembers(
  op: "add" | "remove",
  id: string,
  address: string | undefined,
  flags: MembersFlags,
): Promise<number> {
  if (op === "add" && !address) {
    console.error("isthmus coordinator members add: give the new member's address (host:port)");
    return 2;
  }
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(flags));
  } catch (err) {
    console.error(`isthmus coordinator members: ${(err as Error).message}`);
    return 2;
  }
  try {
    const res =
      op === "add"
        ? await client.rpc((c) => c.addMember, {
            id,
            address: address ?? "",
            learner: flags.learner === true,
          })
        : await client.rpc((c) => c.removeMember, { id });
    if (flags.output === "json") console.log(JSON.stringify(res.members));
    else
      console.log(
        formatTable(
          ["MEMBER", "ADDRESS", "VOTER", "LEADER"],
          res.members.map((m) => [m.id, m.address || "-", m.voter ? "yes" : "learner", m.leader ? "*" : ""]),
        ),
      );
    return 0;
  } catch (err) {
    console.error(`isthmus coordinator members ${op}: ${describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}
