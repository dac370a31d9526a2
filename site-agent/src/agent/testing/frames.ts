// Frame builders for agent tests: Ethernet + IPv4 + UDP/TCP/ICMP with valid checksums, in a few
// words (`udpFrame({ srcMac, dstMac, srcIp, dstIp, sport, dport })`).

export function mac(text: string): Buffer {
  return Buffer.from(text.split(":").map((h) => Number.parseInt(h, 16)));
}

function ip4(text: string): Buffer {
  return Buffer.from(text.split(".").map((d) => Number(d)));
}

export function checksum(b: Buffer, start = 0, end = b.length, initial = 0): number {
  let sum = initial;
  for (let i = start; i + 1 < end; i += 2) sum += b.readUInt16BE(i);
  if ((end - start) % 2 === 1) sum += b[end - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface Ip4Frame {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  ttl?: number;
}

function ipv4(f: Ip4Frame, proto: number, l4: Buffer): Buffer {
  const eth = Buffer.alloc(14);
  mac(f.dstMac).copy(eth, 0);
  mac(f.srcMac).copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  ip.writeUInt16BE(0x4000, 6); // DF
  ip[8] = f.ttl ?? 64;
  ip[9] = proto;
  ip4(f.srcIp).copy(ip, 12);
  ip4(f.dstIp).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([eth, ip, l4]);
}

function pseudo(f: Ip4Frame, proto: number, len: number): number {
  const p = Buffer.alloc(12);
  ip4(f.srcIp).copy(p, 0);
  ip4(f.dstIp).copy(p, 4);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  let sum = 0;
  for (let i = 0; i < 12; i += 2) sum += p.readUInt16BE(i);
  return sum;
}

export function udpFrame(f: Ip4Frame & { sport: number; dport: number; payload?: Buffer }): Buffer {
  const payload = f.payload ?? Buffer.from("isthmus");
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(f.sport, 0);
  udp.writeUInt16BE(f.dport, 2);
  udp.writeUInt16BE(udp.length, 4);
  payload.copy(udp, 8);
  udp.writeUInt16BE(checksum(udp, 0, udp.length, pseudo(f, 17, udp.length)) || 0xffff, 6);
  return ipv4(f, 17, udp);
}

export function tcpFrame(
  f: Ip4Frame & { sport: number; dport: number; flags?: number; payload?: Buffer },
): Buffer {
  const payload = f.payload ?? Buffer.alloc(0);
  const tcp = Buffer.alloc(20 + payload.length);
  tcp.writeUInt16BE(f.sport, 0);
  tcp.writeUInt16BE(f.dport, 2);
  tcp.writeUInt32BE(1000, 4);
  tcp[12] = 5 << 4;
  tcp[13] = f.flags ?? 0x02;
  tcp.writeUInt16BE(65535, 14);
  payload.copy(tcp, 20);
  tcp.writeUInt16BE(checksum(tcp, 0, tcp.length, pseudo(f, 6, tcp.length)), 16);
  return ipv4(f, 6, tcp);
}

/** Verifies the IPv4 header checksum and the UDP/TCP checksum of a frame (true = both valid). */
export function checksumsValid(frame: Buffer): boolean {
  const ihl = (frame[14]! & 0x0f) * 4;
  if (checksum(frame, 14, 14 + ihl) !== 0) return false;
  const proto = frame[23]!;
  const l4 = 14 + ihl;
  const len = frame.readUInt16BE(16) - ihl;
  if (proto !== 6 && proto !== 17) return true;
  if (proto === 17 && frame.readUInt16BE(l4 + 6) === 0) return true;
  const p = Buffer.alloc(12);
  frame.copy(p, 0, 26, 34);
  p[9] = proto;
  p.writeUInt16BE(len, 10);
  let sum = 0;
  for (let i = 0; i < 12; i += 2) sum += p.readUInt16BE(i);
  return checksum(frame, l4, l4 + len, sum) === 0;
}
