// Flow state shared between agents: conntrack entries and NAT bindings created at one host and
// installed, with a lifetime, at the hosts that may see the connection's return traffic. This file
// holds the protobuf encoding (schema: isthmus/v1/flowstate.proto) and a bounded store with expiry
// for simulators that keep no state of their own.
import { flowstatepb } from "@isthmus/schema";
import { tag } from "../sim/index.js";

export type FlowStateEntry = flowstatepb.FlowStateEntry;

export const DEFAULT_FLOW_STATE_TTL_MS = 120_000;

/** The flow tag of an entry (the simulation's convention: `ct:<key>`, `nat:<key>`, `arp:<router>:<ip>`). */
export function flowStateTag(e: FlowStateEntry): string {
  if (e.conntrack && e.conntrack.key !== "") return `ct:${e.conntrack.key}`;
  if (e.nat && e.nat.key !== "") return `nat:${e.nat.key}`;
  if (e.arp && e.arp.routerId !== "") return tag.arp(e.arp.routerId, e.arp.ip);
  throw new Error("flow state entry has no conntrack key, nat key or ARP router");
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

  /** Installs or refreshes one entry; returns its tag, or undefined when invalid or full. */
  install(e: FlowStateEntry, now: number): string | undefined {
    let id: string;
    try {
      id = flowStateTag(e);
    } catch {
      this.stats.invalid++;
      return undefined;
    }
    const ttl = e.ttlMs > 0 ? e.ttlMs : DEFAULT_FLOW_STATE_TTL_MS;
    const prev = this.entries.get(id);
    if (prev) {
      prev.expiresAt = now + ttl;
      prev.entry = e;
      this.stats.refreshed++;
      return id;
    }
    if (this.entries.size >= this.maxEntries) {
      this.stats.refusedFull++;
      return undefined;
    }
    this.entries.set(id, { entry: e, expiresAt: now + ttl });
    this.stats.installed++;
    return id;
  }

  has(tag: string, now: number): boolean {
    const s = this.entries.get(tag);
    return s !== undefined && s.expiresAt > now;
  }

  /** Removes expired entries; returns their tags. */
  expire(now: number): string[] {
    const out: string[] = [];
    for (const [id, s] of this.entries) {
      if (s.expiresAt <= now) {
        this.entries.delete(id);
        out.push(id);
      }
    }
    this.stats.expired += out.length;
    return out;
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
