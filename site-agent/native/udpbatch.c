// Batched IPv4 UDP for the agent's VXLAN tunnel socket. Datagrams are read with recvmmsg straight
// into a receive arena that JavaScript owns (fixed slots, lengths and senders in a shared table) and
// announced with one callback per batch; sends are packed by JavaScript into a send arena and
// written with sendmmsg. Nothing is allocated, and no JavaScript runs, per datagram on this side.
// Runs of same-size datagrams to one peer go out as one UDP GSO send, and the socket accepts GRO
// packets (many datagrams in one): the kernel walks its stack once per run, not once per datagram.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "napi-call.h"

#define RX_META 5 // per received datagram: length, source IPv4 (host order), source port, flags, offset
#define TX_META 4 // per queued datagram: arena offset, length, destination IPv4 (host order), port
#define TX_CHUNK 64
// One GSO send: at most this many datagrams and bytes (the kernel allows 64 KiB less headers and,
// on current kernels, 128 segments).
#define GSO_SEGS 64
#define GSO_BYTES 61440
// Datagrams one received GRO packet can hold: the kernel's UDP_MAX_SEGMENTS (a local GSO sender;
// a NIC's GRO stops at 64). The receive table has room for this many per slot.
#define GRO_SEGS 128
#define GRO_CTRL CMSG_SPACE(sizeof(int))
#define GSO_CTRL CMSG_SPACE(sizeof(uint16_t))
#define ROUNDS 4 // batches per wake-up, so a busy tunnel yields to the loop and to the ports

typedef struct {
  int fd;
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  napi_ref refs[4]; // keep the arenas alive while C holds their pointers
  napi_async_context async;
  int closed;
  unsigned char* rx;
  size_t rx_slot;
  uint32_t rx_slots;
  uint32_t* rx_meta;
  uint32_t rx_entries; // capacity of rx_meta, in datagrams (a GRO slot holds many)
  unsigned char* rx_ctrl; // rx_slots * GRO_CTRL: where the kernel says a slot is a GRO packet
  int gso; // UDP_SEGMENT sends work here (cleared when the kernel refuses them with EIO)
  uint32_t segs[TX_CHUNK]; // datagrams in each message of the current sendmmsg
  unsigned char tx_ctrl[TX_CHUNK][GSO_CTRL];
  unsigned char* tx;
  size_t tx_len;
  uint32_t* tx_meta;
  uint32_t tx_max;
  struct mmsghdr* msgs;
  struct iovec* iovs;
  struct sockaddr_in* addrs;
} sock_t;

static void on_readable(uv_poll_t* handle, int status, int events) {
  sock_t* s = (sock_t*)handle->data;
  if (s->closed) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  for (int round = 0; round < ROUNDS && !s->closed; round++) {
    for (uint32_t i = 0; i < s->rx_slots; i++) {
      s->iovs[i].iov_base = s->rx + (size_t)i * s->rx_slot;
      s->iovs[i].iov_len = s->rx_slot;
      memset(&s->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
      s->msgs[i].msg_hdr.msg_iov = &s->iovs[i];
      s->msgs[i].msg_hdr.msg_iovlen = 1;
      s->msgs[i].msg_hdr.msg_name = &s->addrs[i];
      s->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
      s->msgs[i].msg_hdr.msg_control = s->rx_ctrl + (size_t)i * GRO_CTRL;
      s->msgs[i].msg_hdr.msg_controllen = GRO_CTRL;
    }
    int n = recvmmsg(s->fd, s->msgs, s->rx_slots, MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    uint32_t entries = 0;
    for (int i = 0; i < n; i++) {
      struct msghdr* h = &s->msgs[i].msg_hdr;
      uint32_t len = s->msgs[i].msg_len;
      uint32_t seg = len; // a GRO packet is datagrams of `seg` bytes, the last one maybe shorter
      for (struct cmsghdr* c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int g;
          memcpy(&g, CMSG_DATA(c), sizeof g);
          if (g > 0 && (uint32_t)g < len) seg = (uint32_t)g;
        }
      }
      uint32_t off = 0;
      do {
        uint32_t part = len - off < seg ? len - off : seg;
        // The table holds slots * GRO_SEGS entries, so it cannot fill; if it ever did, the rest
        // of the packet is reported as one truncated datagram, which the caller drops and counts.
        int last = entries == s->rx_entries - 1 && off + part < len;
        uint32_t* m = s->rx_meta + (size_t)entries * RX_META;
        m[0] = last ? len - off : part;
        m[1] = ntohl(s->addrs[i].sin_addr.s_addr);
        m[2] = ntohs(s->addrs[i].sin_port);
        m[3] = (last || (h->msg_flags & MSG_TRUNC)) ? 1 : 0;
        m[4] = (uint32_t)((size_t)i * s->rx_slot) + off;
        entries++;
        off = last ? len : off + part;
      } while (off < len && entries < s->rx_entries);
      if (entries == s->rx_entries) break;
    }
    napi_value count;
    napi_create_uint32(env, entries, &count);
    if (call_back(env, s->async, s->self, s->callback, count)) break;
    if ((uint32_t)n < s->rx_slots) break;
  }
  napi_close_handle_scope(env, scope);
}

static void on_closed(uv_handle_t* h) {
  sock_t* s = (sock_t*)h->data;
  free(s->msgs);
  free(s->iovs);
  free(s->addrs);
  free(s->rx_ctrl);
  free(s);
}

static void finalize(napi_env env, void* data, void* hint) {
  sock_t* s = (sock_t*)data;
  if (!s->closed) {
    s->closed = 1;
    uv_poll_stop(&s->poll);
    close(s->fd);
    uv_close((uv_handle_t*)&s->poll, on_closed);
  }
}

static int get_bytes(napi_env env, napi_value v, void** data, size_t* len) {
  bool is;
  if (napi_is_buffer(env, v, &is) == napi_ok && is) {
    return napi_get_buffer_info(env, v, data, len) == napi_ok ? 0 : -1;
  }
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type t;
    size_t n;
    napi_value ab;
    size_t off;
    if (napi_get_typedarray_info(env, v, &t, &n, data, &ab, &off) != napi_ok || t != napi_uint32_array)
      return -1;
    *len = n * 4;
    return 0;
  }
  return -1;
}

// open(ip, port, rx: Buffer, rxSlot, rxMeta: Uint32Array, tx: Buffer, txMeta: Uint32Array,
//      onBatch: (count) => void, bufferBytes): handle
static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  if (need_args(env, info, 9, argv, "open(ip, port, rx, rxSlot, rxMeta, tx, txMeta, onBatch, bufferBytes)"))
    return NULL;
  char ip[64];
  size_t len;
  uint32_t port, rx_slot, buf_bytes;
  if (napi_get_value_string_utf8(env, argv[0], ip, sizeof ip, &len) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &port) != napi_ok || port > 65535 ||
      napi_get_value_uint32(env, argv[3], &rx_slot) != napi_ok || rx_slot == 0 ||
      napi_get_value_uint32(env, argv[8], &buf_bytes) != napi_ok) {
    napi_throw_type_error(env, NULL, "udpbatch.open: bad ip, port, slot size or buffer size");
    return NULL;
  }
  void *rx, *rx_meta, *tx, *tx_meta;
  size_t rx_len, rx_meta_len, tx_len, tx_meta_len;
  if (get_bytes(env, argv[2], &rx, &rx_len) || get_bytes(env, argv[4], &rx_meta, &rx_meta_len) ||
      get_bytes(env, argv[5], &tx, &tx_len) || get_bytes(env, argv[6], &tx_meta, &tx_meta_len)) {
    napi_throw_type_error(env, NULL, "udpbatch.open: arenas must be Buffers, tables Uint32Arrays");
    return NULL;
  }
  uint32_t slots = (uint32_t)(rx_len / rx_slot);
  if (slots == 0 || rx_meta_len < (size_t)slots * GRO_SEGS * RX_META * 4 || tx_meta_len < TX_META * 4) {
    napi_throw_range_error(env, NULL, "udpbatch.open: arena and table sizes do not agree");
    return NULL;
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
    napi_throw_type_error(env, NULL, "udpbatch.open: ip must be an IPv4 address");
    return NULL;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket(AF_INET, SOCK_DGRAM)", errno);
  if (buf_bytes > 0) {
    // Same as node:dgram's setRecvBufferSize: capped by net.core.{r,w}mem_max.
    int b = (int)buf_bytes;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
  }
  if (bind(fd, (struct sockaddr*)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    char what[128];
    snprintf(what, sizeof what, "bind %s:%u", ip, port);
    return throw_errno(env, what, e);
  }
  // GRO: the kernel may hand over runs of datagrams from one sender as one (split again above).
  // Without it (older kernels) every datagram arrives alone, which is only slower.
  int one = 1;
  setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one);
  sock_t* s = calloc(1, sizeof(sock_t));
  uint32_t vec = slots > TX_CHUNK ? slots : TX_CHUNK;
  if (s) {
    s->msgs = calloc(vec, sizeof(struct mmsghdr));
    s->iovs = calloc(vec, sizeof(struct iovec));
    s->addrs = calloc(vec, sizeof(struct sockaddr_in));
    s->rx_ctrl = calloc(slots, GRO_CTRL);
  }
  if (!s || !s->msgs || !s->iovs || !s->addrs || !s->rx_ctrl) {
    close(fd);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  s->fd = fd;
  s->env = env;
  s->rx = rx;
  s->rx_slot = rx_slot;
  s->rx_slots = slots;
  s->rx_meta = rx_meta;
  s->rx_entries = (uint32_t)(rx_meta_len / (RX_META * 4));
  s->gso = 1;
  s->tx = tx;
  s->tx_len = tx_len;
  s->tx_meta = tx_meta;
  s->tx_max = (uint32_t)(tx_meta_len / (TX_META * 4));
  napi_create_reference(env, argv[2], 1, &s->refs[0]);
  napi_create_reference(env, argv[4], 1, &s->refs[1]);
  napi_create_reference(env, argv[5], 1, &s->refs[2]);
  napi_create_reference(env, argv[6], 1, &s->refs[3]);
  napi_value handle = new_callback_handle(env, s, finalize, argv[7], "isthmus.udpbatch", &s->callback,
                                          &s->self, &s->async);
  poll_readable(env, &s->poll, fd, s, on_readable);
  return handle;
}

DEFINE_UNWRAP(sock_t, "udpbatch: socket is closed")

static napi_value LocalPort(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  sock_t* s = unwrap(env, argv[0]);
  if (!s) return NULL;
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  if (getsockname(s->fd, (struct sockaddr*)&sa, &sl) < 0) return throw_errno(env, "getsockname", errno);
  napi_value out;
  napi_create_uint32(env, ntohs(sa.sin_port), &out);
  return out;
}

// send(handle, count): writes the first `count` queued datagrams of the send table. Returns how
// many the kernel took; a full socket buffer (EAGAIN) ends the batch, and a datagram the kernel
// refuses (unreachable, too big) is skipped so it cannot hold up the ones after it. Adjacent
// datagrams to one peer, all of the first one's size except a shorter last, go out as one GSO
// message (UDP_SEGMENT): the receiver still gets them as separate datagrams.
static napi_value Send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  get_args(env, info, 2, argv);
  sock_t* s = unwrap(env, argv[0]);
  if (!s) return NULL;
  uint32_t count;
  if (napi_get_value_uint32(env, argv[1], &count) != napi_ok || count > s->tx_max) {
    napi_throw_range_error(env, NULL, "udpbatch.send: count exceeds the send table");
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    uint32_t* m = s->tx_meta + (size_t)i * TX_META;
    if ((size_t)m[0] + m[1] > s->tx_len) {
      napi_throw_range_error(env, NULL, "udpbatch.send: datagram outside the send arena");
      return NULL;
    }
  }
  uint32_t done = 0, sent = 0;
  uint32_t alone_until = 0; // datagrams before this index go out one per message (GSO refused them)
  while (done < count) {
    uint32_t n = 0, idx = done;
    while (n < TX_CHUNK && idx < count) {
      uint32_t* m = s->tx_meta + (size_t)idx * TX_META;
      uint32_t k = 1;
      size_t bytes = m[1];
      if (s->gso && idx >= alone_until && m[1] > 0) {
        while (idx + k < count && k < GSO_SEGS) {
          uint32_t* q = s->tx_meta + (size_t)(idx + k) * TX_META;
          if (q[2] != m[2] || q[3] != m[3] || q[0] != m[0] + bytes || q[1] == 0 || q[1] > m[1] ||
              bytes + q[1] > GSO_BYTES)
            break;
          bytes += q[1];
          k++;
          if (q[1] < m[1]) break; // a shorter datagram ends the run
        }
      }
      struct msghdr* h = &s->msgs[n].msg_hdr;
      memset(h, 0, sizeof *h);
      s->iovs[n].iov_base = s->tx + m[0];
      s->iovs[n].iov_len = bytes;
      memset(&s->addrs[n], 0, sizeof(struct sockaddr_in));
      s->addrs[n].sin_family = AF_INET;
      s->addrs[n].sin_addr.s_addr = htonl(m[2]);
      s->addrs[n].sin_port = htons((uint16_t)m[3]);
      h->msg_iov = &s->iovs[n];
      h->msg_iovlen = 1;
      h->msg_name = &s->addrs[n];
      h->msg_namelen = sizeof(struct sockaddr_in);
      if (k > 1) {
        h->msg_control = s->tx_ctrl[n];
        h->msg_controllen = GSO_CTRL;
        struct cmsghdr* c = CMSG_FIRSTHDR(h);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t g = (uint16_t)m[1];
        memcpy(CMSG_DATA(c), &g, sizeof g);
      }
      s->segs[n] = k;
      n++;
      idx += k;
    }
    int r = sendmmsg(s->fd, s->msgs, n, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EAGAIN || errno == ENOBUFS) break;
      if (s->segs[0] > 1) {
        // The kernel would not segment this run (EIO: the route's device cannot checksum for
        // it, so it never will here; else e.g. a datagram above the path MTU): send it alone.
        if (errno == EIO) s->gso = 0;
        alone_until = done + s->segs[0];
        continue;
      }
      done++; // the first datagram was refused: skip it
      continue;
    }
    for (int i = 0; i < r; i++) {
      done += s->segs[i];
      sent += s->segs[i];
    }
  }
  napi_value out;
  napi_create_uint32(env, sent, &out);
  return out;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  sock_t* s = NULL;
  if (napi_unwrap(env, argv[0], (void**)&s) != napi_ok || !s || s->closed) return NULL;
  s->closed = 1;
  uv_poll_stop(&s->poll);
  close(s->fd);
  napi_delete_reference(env, s->callback);
  for (int i = 0; i < 4; i++) napi_delete_reference(env, s->refs[i]);
  napi_async_destroy(env, s->async);
  void* unused;
  napi_remove_wrap(env, argv[0], &unused);
  uv_close((uv_handle_t*)&s->poll, on_closed);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("open", Open),
      NAPI_METHOD("send", Send),
      NAPI_METHOD("localPort", LocalPort),
      NAPI_METHOD("close", Close),
  };
  return EXPORT_METHODS(env, exports, props);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
