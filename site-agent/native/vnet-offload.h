// Finishing offloaded frames read with PACKET_VNET_HDR, in C for the AF_PACKET arena path: partial
// checksums completed in place, TCP (v4/v6) and UDP-L4 super-frames cut into MSS-sized segments
// written to a segment area, as a NIC would. The same rules as site-agent/src/agent/vnet-offload.ts,
// which stays the readable reference; a unit test holds the two to the same output.
#ifndef ISTHMUS_VNET_OFFLOAD_H
#define ISTHMUS_VNET_OFFLOAD_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VNET_HDR_LEN 10
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_UDP 3
#define VNET_GSO_TCPV6 4
#define VNET_GSO_UDP_L4 5
#define VNET_GSO_ECN 0x80

// Drop codes reported to JavaScript (an output entry with length 0 carries one as its offset).
enum {
  VNET_DROP_MALFORMED_FRAME = 1,
  VNET_DROP_MALFORMED_OFFLOAD = 2,
  VNET_DROP_UFO = 3,
  VNET_DROP_GSO_UNSUPPORTED = 4,
  VNET_DROP_NO_ROOM = 5,
};

// Output: frames as (offset, length) pairs relative to `base`, into `meta` (capacity `cap` pairs).
typedef struct {
  unsigned char* base;
  unsigned char* seg; // segment area (inside base's buffer)
  size_t seg_cap;
  size_t seg_used;
  uint32_t* meta;
  uint32_t cap;
  uint32_t n;
} vnet_out_t;

static inline uint16_t rd16(const unsigned char* p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline void wr16(unsigned char* p, uint32_t v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}
static inline uint16_t le16(const unsigned char* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint64_t vnet_sum16(const unsigned char* b, size_t len, uint64_t s) {
  size_t i = 0;
  for (; i + 1 < len; i += 2) s += rd16(b + i);
  if (i < len) s += (uint64_t)b[i] << 8;
  return s;
}

static uint16_t vnet_fold(uint64_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint16_t)s;
}

static void vnet_emit(vnet_out_t* o, const unsigned char* frame, size_t len) {
  o->meta[2 * o->n] = (uint32_t)(frame - o->base);
  o->meta[2 * o->n + 1] = (uint32_t)len;
  o->n++;
}

static void vnet_drop(vnet_out_t* o, uint32_t code) {
  o->meta[2 * o->n] = code;
  o->meta[2 * o->n + 1] = 0;
  o->n++;
}

typedef struct {
  size_t l3, l4;
  int v6;
} vnet_l3_t;

static int vnet_locate(const unsigned char* f, size_t len, int v6, vnet_l3_t* h) {
  h->l3 = rd16(f + 12) == 0x8100 ? 18 : 14;
  h->v6 = v6;
  if (v6) {
    if (len < h->l3 + 40) return -1;
    h->l4 = h->l3 + 40;
    return 0;
  }
  if (len < h->l3 + 20) return -1;
  h->l4 = h->l3 + (size_t)(f[h->l3] & 0x0f) * 4;
  return 0;
}

static uint64_t vnet_pseudo(const unsigned char* f, const vnet_l3_t* h, uint32_t proto, uint32_t l4len) {
  if (h->v6) return vnet_sum16(f + h->l3 + 8, 32, 0) + (l4len >> 16) + (l4len & 0xffff) + proto;
  return vnet_sum16(f + h->l3 + 12, 8, 0) + proto + l4len;
}

static void vnet_fix_l3(unsigned char* seg, const vnet_l3_t* h, uint32_t l4len, uint32_t id_delta) {
  if (h->v6) {
    wr16(seg + h->l3 + 4, l4len);
    return;
  }
  wr16(seg + h->l3 + 2, (uint32_t)(h->l4 - h->l3) + l4len);
  wr16(seg + h->l3 + 4, (rd16(seg + h->l3 + 4) + id_delta) & 0xffff);
  wr16(seg + h->l3 + 10, 0);
  wr16(seg + h->l3 + 10, (uint16_t)~vnet_fold(vnet_sum16(seg + h->l3, h->l4 - h->l3, 0)));
}

// Room for `count` segments of at most `each` bytes, keeping `reserve` entries for later frames.
static int vnet_room(const vnet_out_t* o, size_t count, size_t each, uint32_t reserve) {
  return o->n + count + reserve <= o->cap && o->seg_used + count * each <= o->seg_cap;
}

static void vnet_segment_tcp(vnet_out_t* o, const unsigned char* f, size_t len, uint32_t mss, int v6,
                             uint32_t reserve) {
  vnet_l3_t h;
  if (vnet_locate(f, len, v6, &h) < 0 || len < h.l4 + 20 || mss == 0) {
    vnet_drop(o, VNET_DROP_MALFORMED_OFFLOAD);
    return;
  }
  size_t tcp_len = (size_t)(f[h.l4 + 12] >> 4) * 4;
  size_t hdr_end = h.l4 + tcp_len;
  if (len < hdr_end) {
    vnet_drop(o, VNET_DROP_MALFORMED_OFFLOAD);
    return;
  }
  size_t payload = len - hdr_end;
  size_t count = payload == 0 ? 1 : (payload + mss - 1) / mss;
  if (!vnet_room(o, count, hdr_end + mss, reserve)) {
    vnet_drop(o, VNET_DROP_NO_ROOM);
    return;
  }
  uint32_t seq0 = ((uint32_t)f[h.l4 + 4] << 24) | ((uint32_t)f[h.l4 + 5] << 16) | ((uint32_t)f[h.l4 + 6] << 8) |
                  f[h.l4 + 7];
  unsigned char flags = f[h.l4 + 13];
  for (size_t i = 0; i < count; i++) {
    size_t start = hdr_end + i * mss;
    size_t seg_len = len - start < mss ? len - start : mss;
    unsigned char* seg = o->seg + o->seg_used;
    memcpy(seg, f, hdr_end);
    memcpy(seg + hdr_end, f + start, seg_len);
    vnet_fix_l3(seg, &h, (uint32_t)(tcp_len + seg_len), (uint32_t)i);
    uint32_t seq = seq0 + (uint32_t)(i * mss);
    seg[h.l4 + 4] = (unsigned char)(seq >> 24);
    seg[h.l4 + 5] = (unsigned char)(seq >> 16);
    seg[h.l4 + 6] = (unsigned char)(seq >> 8);
    seg[h.l4 + 7] = (unsigned char)seq;
    unsigned char fl = flags;
    if (i < count - 1) fl &= (unsigned char)~0x09; // FIN and PSH only on the last segment
    if (i > 0) fl &= (unsigned char)~0x80;         // CWR only on the first
    seg[h.l4 + 13] = fl;
    wr16(seg + h.l4 + 16, 0);
    size_t total = hdr_end + seg_len;
    uint64_t s = vnet_sum16(seg + h.l4, total - h.l4, vnet_pseudo(seg, &h, 6, (uint32_t)(tcp_len + seg_len)));
    wr16(seg + h.l4 + 16, (uint16_t)~vnet_fold(s));
    vnet_emit(o, seg, total);
    o->seg_used += total;
  }
}

static void vnet_segment_udp(vnet_out_t* o, const unsigned char* f, size_t len, uint32_t size, uint32_t reserve) {
  int v6 = rd16(f + (rd16(f + 12) == 0x8100 ? 16 : 12)) == 0x86dd;
  vnet_l3_t h;
  if (vnet_locate(f, len, v6, &h) < 0 || len < h.l4 + 8 || size == 0) {
    vnet_drop(o, VNET_DROP_MALFORMED_OFFLOAD);
    return;
  }
  size_t hdr_end = h.l4 + 8;
  size_t count = (len - hdr_end + size - 1) / size;
  if (!vnet_room(o, count, hdr_end + size, reserve)) {
    vnet_drop(o, VNET_DROP_NO_ROOM);
    return;
  }
  for (size_t i = 0, start = hdr_end; start < len; i++, start += size) {
    size_t seg_len = len - start < size ? len - start : size;
    unsigned char* seg = o->seg + o->seg_used;
    memcpy(seg, f, hdr_end);
    memcpy(seg + hdr_end, f + start, seg_len);
    vnet_fix_l3(seg, &h, (uint32_t)(8 + seg_len), (uint32_t)i);
    wr16(seg + h.l4 + 4, (uint32_t)(8 + seg_len));
    wr16(seg + h.l4 + 6, 0);
    size_t total = hdr_end + seg_len;
    uint16_t c = (uint16_t)~vnet_fold(
        vnet_sum16(seg + h.l4, total - h.l4, vnet_pseudo(seg, &h, 17, (uint32_t)(8 + seg_len))));
    wr16(seg + h.l4 + 6, c == 0 ? 0xffff : c);
    vnet_emit(o, seg, total);
    o->seg_used += total;
  }
}

// One received `[virtio_net_hdr][frame]` buffer (writable: partial checksums are completed in
// place) → frames or one drop entry in `o`. `reserve` entries stay free for the batch's later frames.
static void vnet_finish(vnet_out_t* o, unsigned char* buf, size_t len, uint32_t reserve) {
  if (o->n + 1 + reserve > o->cap) return; // cannot happen with cap ≥ frames per batch
  if (len < VNET_HDR_LEN + 14) {
    vnet_drop(o, VNET_DROP_MALFORMED_FRAME);
    return;
  }
  unsigned flags = buf[0];
  unsigned gso = buf[1] & ~VNET_GSO_ECN;
  uint32_t gso_size = le16(buf + 4);
  size_t csum_start = le16(buf + 6);
  size_t csum_off = le16(buf + 8);
  unsigned char* f = buf + VNET_HDR_LEN;
  size_t flen = len - VNET_HDR_LEN;
  if (gso == VNET_GSO_NONE) {
    if (flags & VNET_F_NEEDS_CSUM) {
      if (csum_start + csum_off + 2 > flen) {
        vnet_drop(o, VNET_DROP_MALFORMED_OFFLOAD);
        return;
      }
      // The field holds the pseudo-header sum; the sum over it and the rest completes it.
      uint16_t s = (uint16_t)~vnet_fold(vnet_sum16(f + csum_start, flen - csum_start, 0));
      // UDP (checksum at offset 6) sends a computed zero as 0xffff; zero would mean "none".
      wr16(f + csum_start + csum_off, s == 0 && csum_off == 6 ? 0xffff : s);
    }
    vnet_emit(o, f, flen);
    return;
  }
  if (gso == VNET_GSO_TCPV4 || gso == VNET_GSO_TCPV6) {
    vnet_segment_tcp(o, f, flen, gso_size, gso == VNET_GSO_TCPV6, reserve);
  } else if (gso == VNET_GSO_UDP_L4) {
    vnet_segment_udp(o, f, flen, gso_size, reserve);
  } else {
    vnet_drop(o, gso == VNET_GSO_UDP ? VNET_DROP_UFO : VNET_DROP_GSO_UNSUPPORTED);
  }
}

#endif
