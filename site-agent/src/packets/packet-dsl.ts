// A small fluent DSL for writing packets in tests and tools:
//   eth("02:00:00:00:00:01", "02:00:00:00:00:02").ip4("10.0.0.1", "10.0.0.2").udp(1, 2).build()
// Addresses are given as strings (or numbers) and checked; build() encodes with checksums.
import { parseIp4, parseIp6, parseMac } from "./addr.js";
import { encodePacket, type PacketSpec, TCP_SYN } from "./encode.js";
import { ARP_REPLY, ARP_REQUEST, ICMP6_NA, ICMP6_NS } from "./packet.js";

type Mac = string | number;
type Ip = string | number;

function mac(m: Mac): number {
  if (typeof m === "number") return m;
  const v = parseMac(m);
  if (v < 0) throw new Error(`packet DSL: bad MAC "${m}"`);
  return v;
}
function ip4(a: Ip): number {
  if (typeof a === "number") return a;
  const v = parseIp4(a);
  if (v < 0) throw new Error(`packet DSL: bad IPv4 address "${a}"`);
  return v;
}
function ip6(a: string): Uint32Array {
  const v = parseIp6(a);
  if (!v) throw new Error(`packet DSL: bad IPv6 address "${a}"`);
  return v;
}

export class FrameBuilder {
  readonly spec: PacketSpec;
  constructor(src: Mac, dst: Mac) {
    this.spec = { eth: { src: mac(src), dst: mac(dst) } };
  }
  vlan(id: number, pcp = 0): this {
    this.spec.eth.vlan = id;
    this.spec.eth.pcp = pcp;
    return this;
  }
  etherType(t: number): this {
    this.spec.eth.etherType = t;
    return this;
  }
  arpRequest(sha: Mac, spa: Ip, tpa: Ip): this {
    this.spec.arp = { op: ARP_REQUEST, sha: mac(sha), spa: ip4(spa), tha: 0, tpa: ip4(tpa) };
    return this;
  }
  arpReply(sha: Mac, spa: Ip, tha: Mac, tpa: Ip): this {
    this.spec.arp = { op: ARP_REPLY, sha: mac(sha), spa: ip4(spa), tha: mac(tha), tpa: ip4(tpa) };
    return this;
  }
  ip4(src: Ip, dst: Ip, opts: Omit<NonNullable<PacketSpec["ip4"]>, "src" | "dst"> = {}): this {
    this.spec.ip4 = { src: ip4(src), dst: ip4(dst), ...opts };
    return this;
  }
  ip6(src: string, dst: string, hopLimit = 64): this {
    this.spec.ip6 = { src: ip6(src), dst: ip6(dst), hopLimit };
    return this;
  }
  ttl(t: number): this {
    if (this.spec.ip4) this.spec.ip4.ttl = t;
    if (this.spec.ip6) this.spec.ip6.hopLimit = t;
    return this;
  }
  udp(src: number, dst: number): this {
    this.spec.udp = { src, dst };
    return this;
  }
  tcp(src: number, dst: number, flags = TCP_SYN, seq = 1000): this {
    this.spec.tcp = { src, dst, flags, seq };
    return this;
  }
  icmpEcho(id = 1, seq = 1, reply = false): this {
    const type = this.spec.ip6 ? (reply ? 129 : 128) : reply ? 0 : 8;
    this.spec.icmp = { type, code: 0, rest: ((id << 16) | seq) >>> 0 };
    return this;
  }
  icmp(type: number, code: number, rest = 0): this {
    this.spec.icmp = { type, code, rest };
    return this;
  }
  /** ICMPv6 neighbor solicitation for `target` carrying the sender's link-layer address. */
  neighborSolicit(target: string, lladdr: Mac): this {
    this.spec.icmp = { type: ICMP6_NS, code: 0, rest: 0 };
    this.spec.payload = ndBody(ip6(target), 1, mac(lladdr));
    return this;
  }
  neighborAdvert(target: string, lladdr: Mac): this {
    this.spec.icmp = { type: ICMP6_NA, code: 0, rest: 0x60000000 };
    this.spec.payload = ndBody(ip6(target), 2, mac(lladdr));
    return this;
  }
  payload(p: Uint8Array | string): this {
    this.spec.payload = typeof p === "string" ? new TextEncoder().encode(p) : p;
    return this;
  }
  build(): Uint8Array {
    return encodePacket(this.spec);
  }
}

/** ND body: target address then one link-layer address option of `optType`. */
export function ndBody(target: ArrayLike<number>, optType: number, lladdr: number): Uint8Array {
  const b = new Uint8Array(24);
  for (let i = 0; i < 4; i++) {
    const w = target[i]!;
    b[4 * i] = w >>> 24;
    b[4 * i + 1] = (w >>> 16) & 0xff;
    b[4 * i + 2] = (w >>> 8) & 0xff;
    b[4 * i + 3] = w & 0xff;
  }
  b[16] = optType;
  b[17] = 1;
  let m = lladdr;
  for (let i = 5; i >= 0; i--) {
    b[18 + i] = m % 256;
    m = Math.floor(m / 256);
  }
  return b;
}

export function eth(src: Mac, dst: Mac): FrameBuilder {
  return new FrameBuilder(src, dst);
}
