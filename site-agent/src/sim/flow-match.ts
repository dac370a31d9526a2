// The flow match: every header field a simulation may look at, plus the input port and tunnel key.
// Reads go through getters that record the field in `seen`, so the installed flow can wildcard
// every field the simulation never looked at (a megaflow mask). Writes (NAT, router MAC rewrite)
// do not record: a rewritten field's original value did not influence the result.
import { FRAG_LATER, type Packet, PROTO_ICMP, PROTO_ICMP6 } from "../packets/packet.js";

/** Field bits of a FlowMask. */
export const F = {
  IN_PORT: 1 << 0,
  TUNNEL_KEY: 1 << 1,
  ETH_SRC: 1 << 2,
  ETH_DST: 1 << 3,
  VLAN: 1 << 4,
  ETHER_TYPE: 1 << 5,
  NW_SRC: 1 << 6,
  NW_DST: 1 << 7,
  NW_PROTO: 1 << 8,
  NW_TOS: 1 << 9,
  NW_TTL: 1 << 10,
  NW_FRAG: 1 << 11,
  TP_SRC: 1 << 12,
  TP_DST: 1 << 13,
  ICMP_ID: 1 << 14,
  ARP_OP: 1 << 15,
  ARP_SPA: 1 << 16,
  ARP_TPA: 1 << 17,
  ARP_SHA: 1 << 18,
  ARP_THA: 1 << 19,
  TCP_FLAGS: 1 << 20,
} as const;
export type FieldName = keyof typeof F;
/** Bitwise OR of F bits: the fields a flow must match exactly; the rest are wildcarded. */
export type FlowMask = number;

export function maskFields(mask: FlowMask): FieldName[] {
  return (Object.keys(F) as FieldName[]).filter((k) => (mask & F[k]) !== 0);
}

const NO_IP6 = new Uint32Array(4);

/** ARP fields, kept apart so an IP packet's match (nearly every one) carries none of them. */
interface ArpFields {
  readonly op: number;
  readonly spa: number;
  readonly tpa: number;
  readonly sha: number;
  readonly tha: number;
}
const NO_ARP: ArpFields = Object.freeze({ op: 0, spa: 0, tpa: 0, sha: 0, tha: 0 });

export class FlowMatch {
  /** Fields read so far (the mask being built). */
  seen: FlowMask = F.IN_PORT | F.TUNNEL_KEY;
  /**
   * Rewritable fields a device wrote (router MACs, NAT). A write that leaves the ingress value
   * emits no `set`, which is right only for packets with that value: the walk then masks the field.
   */
  written: FlowMask = 0;
  /**
   * With NW_DST in `seen`: how many leading bits of the IPv4 destination were looked at (32 = the
   * whole address; an IPv6 destination is always read whole).
   */
  dstBits = 0;

  // Raw values; read them through the getters below so the mask stays honest. One match is made
  // per simulation, so fields no walk rewrites are packed into small integers.
  _inPort = "";
  _tunnelKey = 0;
  _ethSrc = 0;
  _ethDst = 0;
  /** vlan << 16 | ether type. */
  private l2 = 0;
  _nwSrc = 0;
  _nwDst = 0;
  // IPv6 addresses: copies taken only for IPv6 packets, shared between clones (never mutated).
  _nwSrc6: Uint32Array = NO_IP6;
  _nwDst6: Uint32Array = NO_IP6;
  /** IP version << 24 | fragment state << 16 | TOS << 8 | protocol. */
  private l3 = 0;
  _nwTtl = 0;
  _tpSrc = 0;
  _tpDst = 0;
  /** ICMP(v6) echo identifier (SNAT rewrites it like a port). */
  _icmpId = 0;
  /** TCP flags << 16. */
  private l4 = 0;
  /** Shared by clones (never mutated). */
  private arp: ArpFields = NO_ARP;

  static fromPacket(p: Packet, inPort: string, tunnelKey: number): FlowMatch {
    const m = new FlowMatch();
    m.load(p, inPort, tunnelKey);
    return m;
  }

  load(p: Packet, inPort: string, tunnelKey: number): void {
    this.seen = F.IN_PORT | F.TUNNEL_KEY;
    this.written = 0;
    this.dstBits = 0;
    this._inPort = inPort;
    this._tunnelKey = tunnelKey;
    this._ethSrc = p.ethSrc;
    this._ethDst = p.ethDst;
    this.l2 = ((p.vlan & 0xfff) << 16) | (p.etherType & 0xffff);
    this._nwSrc = p.nwSrc;
    this._nwDst = p.nwDst;
    if (p.ipVersion === 6) {
      this._nwSrc6 = p.nwSrc6.slice();
      this._nwDst6 = p.nwDst6.slice();
    } else {
      this._nwSrc6 = NO_IP6;
      this._nwDst6 = NO_IP6;
    }
    this.l3 =
      ((p.ipVersion & 0xf) << 24) | ((p.nwFrag & 0xff) << 16) | ((p.nwTos & 0xff) << 8) | (p.nwProto & 0xff);
    this._nwTtl = p.nwTtl;
    this._tpSrc = p.tpSrc;
    this._tpDst = p.tpDst;
    this._icmpId = p.nwProto === PROTO_ICMP || p.nwProto === PROTO_ICMP6 ? p.icmpId & 0xffff : 0;
    this.l4 = (p.tcpFlags & 0x1ff) << 16;
    this.arp =
      p.arpOp === 0 && p.arpSpa === 0 && p.arpTpa === 0 && p.arpSha === 0 && p.arpTha === 0
        ? NO_ARP
        : { op: p.arpOp, spa: p.arpSpa, tpa: p.arpTpa, sha: p.arpSha, tha: p.arpTha };
  }

  copyFrom(o: FlowMatch): void {
    this.seen = o.seen;
    this.written = o.written;
    this.dstBits = o.dstBits;
    this._inPort = o._inPort;
    this._tunnelKey = o._tunnelKey;
    this._ethSrc = o._ethSrc;
    this._ethDst = o._ethDst;
    this.l2 = o.l2;
    this._nwSrc = o._nwSrc;
    this._nwDst = o._nwDst;
    this._nwSrc6 = o._nwSrc6;
    this._nwDst6 = o._nwDst6;
    this.l3 = o.l3;
    this._nwTtl = o._nwTtl;
    this._tpSrc = o._tpSrc;
    this._tpDst = o._tpDst;
    this._icmpId = o._icmpId;
    this.l4 = o.l4;
    this.arp = o.arp;
  }

  clone(): FlowMatch {
    const m = new FlowMatch();
    m.copyFrom(this);
    return m;
  }

  get inPort(): string {
    return this._inPort;
  }
  get tunnelKey(): number {
    return this._tunnelKey;
  }
  get ethSrc(): number {
    this.seen |= F.ETH_SRC;
    return this._ethSrc;
  }
  get ethDst(): number {
    this.seen |= F.ETH_DST;
    return this._ethDst;
  }
  get vlan(): number {
    this.seen |= F.VLAN;
    return this.l2 >>> 16;
  }
  get etherType(): number {
    this.seen |= F.ETHER_TYPE;
    return this.l2 & 0xffff;
  }
  /** 4, 6 or 0; reading it depends on the ether type. */
  get ipVersion(): number {
    this.seen |= F.ETHER_TYPE;
    return this.l3 >>> 24;
  }
  get nwSrc(): number {
    this.seen |= F.NW_SRC | F.ETHER_TYPE;
    return this._nwSrc;
  }
  get nwDst(): number {
    this.seen |= F.NW_DST | F.ETHER_TYPE;
    this.dstBits = 32;
    return this._nwDst;
  }
  /** Records that the result depends on the first `bits` bits of the IPv4 destination only. */
  nwDstPrefix(bits: number): number {
    if (bits > 0) {
      this.seen |= F.NW_DST | F.ETHER_TYPE;
      if (bits > this.dstBits) this.dstBits = bits;
    }
    return this._nwDst;
  }
  get nwSrc6(): Uint32Array {
    this.seen |= F.NW_SRC | F.ETHER_TYPE;
    return this._nwSrc6;
  }
  get nwDst6(): Uint32Array {
    this.seen |= F.NW_DST | F.ETHER_TYPE;
    this.dstBits = 32;
    return this._nwDst6;
  }
  get nwProto(): number {
    this.seen |= F.NW_PROTO | F.ETHER_TYPE;
    return this.l3 & 0xff;
  }
  get nwTos(): number {
    this.seen |= F.NW_TOS;
    return (this.l3 >>> 8) & 0xff;
  }
  get nwTtl(): number {
    this.seen |= F.NW_TTL;
    return this._nwTtl;
  }
  get nwFrag(): number {
    this.seen |= F.NW_FRAG;
    return (this.l3 >>> 16) & 0xff;
  }
  /** Transport source port (ICMP: type); 0 for later fragments, which carry no L4 header. */
  get tpSrc(): number {
    this.seen |= F.TP_SRC | F.NW_PROTO | F.NW_FRAG;
    return this._tpSrc;
  }
  get tpDst(): number {
    this.seen |= F.TP_DST | F.NW_PROTO | F.NW_FRAG;
    return this._tpDst;
  }
  get icmpId(): number {
    this.seen |= F.ICMP_ID | F.NW_PROTO;
    return this._icmpId;
  }
  get arpOp(): number {
    this.seen |= F.ARP_OP | F.ETHER_TYPE;
    return this.arp.op;
  }
  get arpSpa(): number {
    this.seen |= F.ARP_SPA;
    return this.arp.spa;
  }
  get arpTpa(): number {
    this.seen |= F.ARP_TPA;
    return this.arp.tpa;
  }
  get arpSha(): number {
    this.seen |= F.ARP_SHA;
    return this.arp.sha;
  }
  get arpTha(): number {
    this.seen |= F.ARP_THA;
    return this.arp.tha;
  }
  get tcpFlags(): number {
    this.seen |= F.TCP_FLAGS;
    return this.l4 >>> 16;
  }
  /** True for a later IP fragment (no ports known). */
  isLaterFragment(): boolean {
    return this.nwFrag === FRAG_LATER;
  }
}
