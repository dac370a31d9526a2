// A deterministic hash of a flow's 5-tuple (FNV-1a over its numbers) for ECMP and NAT choices:
// every packet of a flow takes the same path, and different agents spread differently by seed.
import type { CtTuple } from "./conntrack.js";

function mix(h: number, v: number): number {
  h = Math.imul(h ^ (v & 0xff), 0x01000193);
  h = Math.imul(h ^ ((v >>> 8) & 0xff), 0x01000193);
  h = Math.imul(h ^ ((v >>> 16) & 0xff), 0x01000193);
  return Math.imul(h ^ (v >>> 24), 0x01000193);
}

export function flowHash(t: CtTuple, seed: number): number {
  let h = mix(0x811c9dc5, seed);
  if (t.ipVersion === 6) {
    for (let i = 0; i < 4; i++) h = mix(mix(h, t.src6[i]!), t.dst6[i]!);
  } else h = mix(mix(h, t.src), t.dst);
  h = mix(h, t.proto);
  h = mix(h, (t.sport << 16) | t.dport);
  return h >>> 0;
}
