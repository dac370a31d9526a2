// Kind and id of the oneof-wrapped intent and topology objects, and the encoding the site
// database stores them in (the proto wire format, so the DB holds exactly the contract's bytes).
import { INTENT_KIND_KEYS, intentKindEnum, intentpb, topologypb } from "@isthmus/schema";

type IntentObject = intentpb.IntentObject;
type TopologyObject = topologypb.TopologyObject;
const TK = topologypb.TopologyKind;

const INTENT_CASES: [keyof IntentObject, intentpb.ObjectKind][] = INTENT_KIND_KEYS.map((k) => [
  k,
  intentKindEnum(k),
]);

const TOPOLOGY_CASES: [keyof TopologyObject, topologypb.TopologyKind][] = [
  ["host", TK.TOPOLOGY_KIND_HOST],
  ["bridge", TK.TOPOLOGY_KIND_BRIDGE],
  ["router", TK.TOPOLOGY_KIND_ROUTER],
  ["port", TK.TOPOLOGY_KIND_PORT],
  ["route", TK.TOPOLOGY_KIND_ROUTE],
  ["chain", TK.TOPOLOGY_KIND_CHAIN],
  ["rule", TK.TOPOLOGY_KIND_RULE],
  ["ipAddrGroup", TK.TOPOLOGY_KIND_IP_ADDR_GROUP],
  ["portGroup", TK.TOPOLOGY_KIND_PORT_GROUP],
  ["macEntry", TK.TOPOLOGY_KIND_MAC_ENTRY],
  ["arpEntry", TK.TOPOLOGY_KIND_ARP_ENTRY],
  ["remoteGateway", TK.TOPOLOGY_KIND_REMOTE_GATEWAY],
  ["ipAddrGroupMember", TK.TOPOLOGY_KIND_IP_ADDR_GROUP_MEMBER],
];

export interface IntentKey {
  kind: intentpb.ObjectKind;
  id: string;
}

/** Kind and id of an intent object; throws naming the problem when it has no kind or id. */
export function intentKeyOf(obj: IntentObject): IntentKey {
  for (const [field, kind] of INTENT_CASES) {
    const inner = obj[field] as { meta?: intentpb.ObjectMeta } | undefined;
    if (inner === undefined) continue;
    const id = inner.meta?.id ?? "";
    if (id === "") throw new Error(`intent object of kind ${field} has no meta.id`);
    return { kind, id };
  }
  throw new Error("intent object has no kind set");
}

export function topologyRefOf(obj: TopologyObject): topologypb.TopologyRef {
  for (const [field, kind] of TOPOLOGY_CASES) {
    const inner = obj[field] as { id?: string } | undefined;
    if (inner === undefined) continue;
    if (!inner.id) throw new Error(`topology object of kind ${field} has no id`);
    return { kind, id: inner.id };
  }
  throw new Error("topology object has no kind set");
}

export function keyString(kind: number, id: string): string {
  return `${kind}/${id}`;
}

export const encodeIntent = (o: IntentObject): Buffer =>
  Buffer.from(intentpb.IntentObject.encode(o).finish());
export const decodeIntent = (b: Uint8Array): IntentObject => intentpb.IntentObject.decode(b);
export const encodeTopology = (o: TopologyObject): Buffer =>
  Buffer.from(topologypb.TopologyObject.encode(o).finish());
export const decodeTopology = (b: Uint8Array): TopologyObject => topologypb.TopologyObject.decode(b);
