// Flow state shared between agents: conntrack entries and NAT bindings created at one host and
// installed, with a lifetime, at the hosts that may see the connection's return traffic. This file
// holds the bounded table with expiry and the protobuf encoding (schema: isthmus/v1/flowstate.proto).
import { flowstatepb } from "@isthmus/schema";

export type FlowStateEntry = flowstatepb.FlowStateEntry;
export type FlowStateKey = flowstatepb.FlowStateKey;

export const DEFAULT_FLOW_STATE_TTL_MS = 120_000;

export function flowStateKeyText(k: FlowStateKey): string {
  return `${k.zone}|${k.etherType}|${k.protocol}|${k.srcIp}|${k.srcPort}|${k.dstIp}|${k.dstPort}`;
}

/** The tag a simulation puts on flows whose result depended on this entry (present or absent). */
export function flowStateTag(e: FlowStateEntry): string {
  return entryId(e);
}

function entryId(e: FlowStateEntry): string {
  if (e.conntrack?.key) return `ct|${flowStateKeyText(e.conntrack.key)}`;
  if (e.nat?.key) return `nat|${e.nat.source ? "s" : "d"}|${flowStateKeyText(e.nat.key)}`;
  throw new Error("flow state entry has neither conntrack nor nat with a key");
}

interface Stored {
  entry: FlowStateEntry;
  expiresAt: number;
}

export class FlowStateTable {
  private readonly entries = new Map<string, Stored>();
  readonly stats = { installed: 0, refreshed: 0, refusedFull: 0, expired: 0, invalid: 0 };

  constructor(readonly maxEntries = 200_000) {}

  get size(): number {
    return this.entries.size;
  }

  /** Installs or refreshes one entry; false when invalid or the table is full. */
  install(e: FlowStateEntry, now: number): boolean {
    let id: string;
    try {
      id = entryId(e);
    } catch {
      this.stats.invalid++;
      return false;
    }
    const ttl = e.ttlMs > 0 ? e.ttlMs : DEFAULT_FLOW_STATE_TTL_MS;
    const prev = this.entries.get(id);
    if (prev) {
      prev.expiresAt = now + ttl;
      prev.entry = e;
      this.stats.refreshed++;
      return true;
    }
    if (this.entries.size >= this.maxEntries) {
      this.stats.refusedFull++;
      return false;
    }
    this.entries.set(id, { entry: e, expiresAt: now + ttl });
    this.stats.installed++;
    return true;
  }

  /** Is there a live conntrack entry for this forward-direction key? */
  hasConntrack(k: FlowStateKey, now: number): boolean {
    const s = this.entries.get(`ct|${flowStateKeyText(k)}`);
    return s !== undefined && s.expiresAt > now;
  }

  nat(k: FlowStateKey, source: boolean, now: number): flowstatepb.NatEntry | undefined {
    const s = this.entries.get(`nat|${source ? "s" : "d"}|${flowStateKeyText(k)}`);
    return s !== undefined && s.expiresAt > now ? s.entry.nat : undefined;
  }

  expire(now: number): number {
    let n = 0;
    for (const [id, s] of this.entries) {
      if (s.expiresAt <= now) {
        this.entries.delete(id);
        n++;
      }
    }
    this.stats.expired += n;
    return n;
  }

  all(): FlowStateEntry[] {
    return [...this.entries.values()].map((s) => s.entry);
  }
}

export function encodeFlowState(senderHostId: string, sequence: number, entries: FlowStateEntry[]): Buffer {
  return Buffer.from(flowstatepb.FlowStateMessage.encode({ senderHostId, sequence, entries }).finish());
}

/** Decodes a peer's message; throws on bytes that are not one. */
export function decodeFlowState(payload: Buffer): flowstatepb.FlowStateMessage {
  const m = flowstatepb.FlowStateMessage.decode(payload);
  if (m.senderHostId === "") throw new Error("flow state message without sender_host_id");
  return m;
}
