// The key-value state machine the raft tests and the raft benchmark replicate: put(key, value)
// returns the log index that wrote it (the key's revision). Deterministic, snapshot as JSON.
import type { Entry, StateMachine } from "@isthmus/federation/raft";

export interface KvCommand {
  k: string;
  v: string;
}

export function encodePut(k: string, v: string): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ k, v } satisfies KvCommand));
}

export class KvStateMachine implements StateMachine<number> {
  readonly data = new Map<string, string>();
  applied = 0;

  apply(e: Entry): number {
    const cmd = JSON.parse(new TextDecoder().decode(e.data)) as KvCommand;
    this.data.set(cmd.k, cmd.v);
    this.applied = e.index;
    return e.index;
  }

  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify({ applied: this.applied, data: [...this.data] }));
  }

  restore(bytes: Uint8Array): void {
    this.data.clear();
    if (bytes.byteLength === 0) return;
    const s = JSON.parse(new TextDecoder().decode(bytes)) as { applied: number; data: [string, string][] };
    for (const [k, v] of s.data) this.data.set(k, v);
    this.applied = s.applied;
  }
}
