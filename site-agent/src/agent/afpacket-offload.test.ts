import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { afPacketAvailable, nativeFinishOffloads } from "./afpacket-port.js";
import { checksumsValid, tcpFrame, udpFrame } from "./testing/frames.js";
import { finishOffloads, VNET_HDR_LEN } from "./vnet-offload.js";

// The AF_PACKET arena path finishes offloads in C (native/vnet-offload.h); vnet-offload.ts is the
// readable reference. Both must turn the same buffer into the same frames or the same drop.
const skip = afPacketAvailable() || process.env.CI ? false : "native addon not built (npm run build)";

const base = {
  srcMac: "02:00:00:00:00:01",
  dstMac: "02:00:00:00:00:02",
  srcIp: "10.0.0.1",
  dstIp: "10.0.0.2",
};

function vnet(
  frame: Buffer,
  flags: number,
  gso: number,
  gsoSize: number,
  start: number,
  off: number,
): Buffer {
  const hdr = Buffer.alloc(VNET_HDR_LEN);
  hdr[0] = flags;
  hdr[1] = gso;
  hdr.writeUInt16LE(gsoSize, 4);
  hdr.writeUInt16LE(start, 6);
  hdr.writeUInt16LE(off, 8);
  return Buffer.concat([hdr, frame]);
}

test("C offload finishing equals the TypeScript reference: TSO, UDP-L4, partial checksums", { skip }, () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 9000 }),
      fc.integer({ min: 1, max: 2000 }),
      fc.constantFrom("tcp", "udp-gso", "udp-csum", "plain"),
      fc.integer({ min: 0, max: 0xff }),
      (bytes, mss, kind, tcpFlags) => {
        const payload = Buffer.from(bytes);
        let buf: Buffer;
        if (kind === "tcp") {
          const f = tcpFrame({ ...base, sport: 40000, dport: 5201, flags: tcpFlags, payload });
          f.writeUInt16BE(0x1234, 50); // a partial checksum's leftover must not matter
          buf = vnet(f, 1, 1, mss, 34, 16);
        } else if (kind === "udp-gso") {
          buf = vnet(udpFrame({ ...base, sport: 1, dport: 2, payload }), 1, 5, mss, 34, 6);
        } else if (kind === "udp-csum") {
          const f = udpFrame({ ...base, sport: 1, dport: 2, payload });
          // Partial: the field holds the uncomplemented pseudo-header sum.
          let s = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 17 + (f.length - 34);
          while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
          f.writeUInt16BE(s, 40);
          buf = vnet(f, 1, 0, 0, 34, 6);
        } else {
          buf = vnet(udpFrame({ ...base, sport: 1, dport: 2, payload }), 0, 0, 0, 0, 0);
        }
        const js = finishOffloads(Buffer.from(buf));
        const c = nativeFinishOffloads(buf);
        assert.ok("frames" in js && "frames" in c);
        assert.equal(c.frames.length, js.frames.length);
        for (const [i, f] of c.frames.entries()) {
          assert.ok(f.equals(js.frames[i]!), `${kind} frame ${i} of ${c.frames.length}`);
          assert.ok(checksumsValid(f), `${kind} frame ${i} checksums`);
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("C offload finishing drops what the reference drops, with the same reason", { skip }, () => {
  const f = udpFrame({ ...base, sport: 1, dport: 2 });
  const cases = [
    Buffer.alloc(12),
    vnet(f, 0, 3, 100, 0, 0),
    vnet(f, 0, 9, 100, 0, 0),
    vnet(f, 1, 0, 0, 2000, 6),
    vnet(f.subarray(0, 30), 0, 1, 1400, 0, 0),
  ];
  for (const b of cases) assert.deepEqual(nativeFinishOffloads(b), finishOffloads(Buffer.from(b)));
  // An MSS so small that a super-frame's segments cannot fit the segment area is a counted drop.
  const huge = tcpFrame({ ...base, sport: 1, dport: 2, payload: Buffer.alloc(60_000) });
  assert.deepEqual(nativeFinishOffloads(vnet(huge, 1, 1, 1, 34, 16)), { drop: "gso_no_room" });
});
