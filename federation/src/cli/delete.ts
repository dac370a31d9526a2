// `isthmus delete <kind> <name>`: deletes one admin object. Referential integrity is the
// coordinator's: deleting something still in use is refused with what uses it.
import { KIND_NAMES, kindEnum } from "../intent/index.js";
import { type ConnectionFlags, describeError, FederationClient, loadClientConfig } from "./connection.js";
import { kindList, parseKind } from "./get.js";

export interface DeleteFlags extends ConnectionFlags {
  revision?: string;
  output: string;
}

export async function runDelete(kindText: string, name: string, flags: DeleteFlags): Promise<number> {
  const kind = parseKind(kindText);
  if (!kind) {
    console.error(`isthmus delete: unknown kind "${kindText}" (one of: ${kindList()})`);
    return 2;
  }
  const expectedRevision = flags.revision === undefined ? 0 : Number(flags.revision);
  if (!Number.isSafeInteger(expectedRevision) || expectedRevision < 0) {
    console.error(`isthmus delete: --revision must be a log index, got "${flags.revision}"`);
    return 2;
  }
  let client: FederationClient;
  try {
    client = new FederationClient(loadClientConfig(flags));
  } catch (err) {
    console.error(`isthmus delete: ${(err as Error).message}`);
    return 2;
  }
  try {
    const res = await client.rpc((c) => c.delete, { kind: kindEnum(kind), id: "", name, expectedRevision });
    if (flags.output === "json") {
      console.log(
        JSON.stringify({ index: res.index, deleted: res.deleted.map((d) => ({ id: d.id, name: d.name })) }),
      );
    } else {
      const others = res.deleted.length - 1;
      console.log(
        `${KIND_NAMES[kind]}/${name} deleted at index ${res.index}${others > 0 ? ` (with ${others} dependent object${others > 1 ? "s" : ""})` : ""}`,
      );
    }
    return 0;
  } catch (err) {
    console.error(`isthmus delete: ${describeError(err)}`);
    return 1;
  } finally {
    client.close();
  }
}
