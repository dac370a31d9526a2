// The nine object kinds of the intent model and the few operations every kind shares: naming the
// kind, reaching its ObjectMeta, wrapping it in an IntentObject. Also the deterministic ids and
// MACs the state machine derives from log positions (so every replica derives the same ones).
import { createHash } from "node:crypto";
import {
  INTENT_KIND_KEYS,
  type IntentKindKey,
  type IntentKindMessages,
  intentKindEnum,
  intentKindFromEnum,
  type intentpb,
} from "@isthmus/schema";

// The kind table itself is shared with the site controller (@isthmus/schema).
export type KindKey = IntentKindKey;
export type KindMessages = IntentKindMessages;

/** In ObjectKind order; snapshots and listings use this order. */
export const KIND_KEYS: readonly KindKey[] = INTENT_KIND_KEYS;

export type AnyObject = KindMessages[KindKey];

/** Names people type (CLI, YAML, error messages). */
export const KIND_NAMES: Record<KindKey, string> = {
  site: "site",
  gateway: "gateway",
  router: "router",
  network: "network",
  routerInterface: "router-interface",
  securityGroup: "security-group",
  securityGroupRule: "security-group-rule",
  floatingIp: "floating-ip",
  portRecord: "port",
};

export const kindEnum: (k: KindKey) => intentpb.ObjectKind = intentKindEnum;
export const kindFromEnum: (e: intentpb.ObjectKind) => KindKey | undefined = intentKindFromEnum;

/** Accepts "network", "networks", "router-interface", "routerInterface", "OBJECT_KIND_NETWORK"... */
export function kindFromName(name: string): KindKey | undefined {
  const n = name
    .toLowerCase()
    .replace(/^object_kind_/, "")
    .replace(/[-_]/g, "");
  for (const k of KIND_KEYS) {
    const plain = KIND_NAMES[k].replace(/-/g, "");
    if (n === plain || n === `${plain}s` || n === k.toLowerCase() || n === `${k.toLowerCase()}s`) return k;
  }
  if (n === "fip" || n === "fips" || n === "floatingips") return "floatingIp";
  if (n === "ports" || n === "portrecord" || n === "portrecords") return "portRecord";
  return undefined;
}

/** The kind of an IntentObject, or undefined when it holds none or several (a malformed request). */
export function kindOf(obj: intentpb.IntentObject): KindKey | undefined {
  const set = KIND_KEYS.filter((k) => obj[k] !== undefined);
  return set.length === 1 ? set[0] : undefined;
}

export function innerOf(obj: intentpb.IntentObject): AnyObject | undefined {
  const k = kindOf(obj);
  return k ? (obj[k] as AnyObject) : undefined;
}

export function wrap<K extends KindKey>(kind: K, msg: KindMessages[K]): intentpb.IntentObject {
  return { [kind]: msg } as intentpb.IntentObject;
}

export function metaOf(obj: AnyObject): intentpb.ObjectMeta {
  if (!obj.meta) throw new Error("intent: object without meta (invariant violated)");
  return obj.meta;
}

export function refOf(kind: KindKey, obj: AnyObject): intentpb.ObjectRef {
  const m = metaOf(obj);
  return { kind: kindEnum(kind), id: m.id, name: m.name };
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isUuid(s: string): boolean {
  return UUID_RE.test(s);
}

/** A version-8 (custom) UUID from a hash of `seed`; the seed names the log position. */
export function deterministicUuid(seed: string): string {
  const h = createHash("sha256").update(`isthmus-id:${seed}`).digest();
  h.writeUInt8((h.readUInt8(6) & 0x0f) | 0x80, 6);
  h.writeUInt8((h.readUInt8(8) & 0x3f) | 0x80, 8);
  const x = h.subarray(0, 16).toString("hex");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** A locally administered unicast MAC derived from an object id. */
export function deterministicMac(id: string): string {
  const h = createHash("sha256").update(`isthmus-mac:${id}`).digest();
  const bytes = [0x02, ...h.subarray(0, 5)];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}
