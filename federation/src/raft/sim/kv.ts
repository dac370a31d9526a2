// The simulation's replicated key-value state machine. Commands carry a client session (client id
// and sequence number) so a proposal applied twice — a duplicated or retried message — takes
// effect once, as a real client library would ensure.

export interface KvCommand {
  client: number;
  seq: number;
  key: string;
  value: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCommand(c: KvCommand): Uint8Array {
  return enc.encode(JSON.stringify([c.client, c.seq, c.key, c.value]));
}

export function decodeCommand(data: Uint8Array): KvCommand {
  const [client, seq, key, value] = JSON.parse(dec.decode(data)) as [number, number, string, string];
  return { client, seq, key, value };
}

export class KvStore {
  private readonly data = new Map<string, string>();
  private readonly sessions = new Map<number, number>();

  /** Applies a put; returns false when it is a duplicate of an already applied command. */
  apply(c: KvCommand): boolean {
    const last = this.sessions.get(c.client) ?? 0;
    if (c.seq <= last) return false;
    this.sessions.set(c.client, c.seq);
    this.data.set(c.key, c.value);
    return true;
  }

  get(key: string): string {
    return this.data.get(key) ?? "";
  }

  snapshot(): Uint8Array {
    const keys = [...this.data.keys()].sort();
    const clients = [...this.sessions.keys()].sort((a, b) => a - b);
    return enc.encode(
      JSON.stringify({
        data: keys.map((k) => [k, this.data.get(k)]),
        sessions: clients.map((c) => [c, this.sessions.get(c)]),
      }),
    );
  }

  static restore(bytes: Uint8Array): KvStore {
    const kv = new KvStore();
    if (bytes.length === 0) return kv;
    const o = JSON.parse(dec.decode(bytes)) as { data: [string, string][]; sessions: [number, number][] };
    for (const [k, v] of o.data) kv.data.set(k, v);
    for (const [c, s] of o.sessions) kv.sessions.set(c, s);
    return kv;
  }
}
