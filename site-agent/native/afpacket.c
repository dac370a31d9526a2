// AF_PACKET port I/O for the Isthmus agent: one raw socket bound to a host interface (the host side
// of a VM's veth), read in batches with recvmmsg when libuv reports it readable and written in
// batches with sendmmsg. Frames carry a virtio_net_hdr (PACKET_VNET_HDR) so offloaded frames from the
// VM (TSO super-frames, partial checksums) are visible as such; JavaScript finishes them. VM ports use
// the arena calls (frames read into and written from JS-owned buffers, one JS call per batch); the
// kernel datapath's upcall device uses the copying open/send.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "napi-call.h"
#include "vnet-offload.h"

#define BATCH 32
#define VNET_HDR VNET_HDR_LEN
#define FRAME_MAX (65536 + VNET_HDR + 64)

typedef struct {
  int fd;
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  napi_async_context async;
  int closed;
  unsigned char* bufs; // BATCH * FRAME_MAX (copy mode)
  // Arena mode (openArena): frames land in a JavaScript-owned arena, lengths in a shared table.
  unsigned char* arena;
  size_t arena_len;
  size_t slot;
  uint32_t slots;
  uint32_t* meta; // (offset, length) pairs of finished frames; length 0 = a drop, code in offset
  uint32_t meta_pairs;
  napi_ref arena_ref;
  napi_ref meta_ref;
  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH];
} port_t;

static void on_readable(uv_poll_t* handle, int status, int events) {
  port_t* p = (port_t*)handle->data;
  if (p->closed) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  // Drain a few batches per wake-up so one busy port yields to the loop (and to other ports).
  uint32_t batch = p->arena ? p->slots : BATCH;
  for (int round = 0; round < 4 && !p->closed; round++) {
    for (uint32_t i = 0; i < batch; i++) {
      p->iovs[i].iov_base = p->arena ? p->arena + (size_t)i * p->slot : p->bufs + (size_t)i * FRAME_MAX;
      p->iovs[i].iov_len = p->arena ? p->slot : FRAME_MAX;
      memset(&p->msgs[i].msg_hdr, 0, sizeof(struct msghdr));
      p->msgs[i].msg_hdr.msg_iov = &p->iovs[i];
      p->msgs[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(p->fd, p->msgs, batch, MSG_DONTWAIT, NULL);
    if (n <= 0) break;
    napi_value arr;
    if (p->arena) {
      // Offloads are finished here (checksums in place, super-frames cut into the segment area
      // after the slots); one callback per batch with the number of (offset, length) entries.
      size_t seg_start = (size_t)p->slots * p->slot;
      vnet_out_t o = {p->arena, p->arena + seg_start, p->arena_len - seg_start, 0, p->meta, p->meta_pairs, 0};
      for (int i = 0; i < n; i++)
        vnet_finish(&o, p->iovs[i].iov_base, p->msgs[i].msg_len, (uint32_t)(n - i - 1));
      napi_create_uint32(env, o.n, &arr);
    } else {
      napi_create_array_with_length(env, n, &arr);
      for (int i = 0; i < n; i++) {
        napi_value buf;
        napi_create_buffer_copy(env, p->msgs[i].msg_len, p->iovs[i].iov_base, NULL, &buf);
        napi_set_element(env, arr, i, buf);
      }
    }
    if (call_back(env, p->async, p->self, p->callback, arr)) break;
    if ((uint32_t)n < batch) break;
  }
  napi_close_handle_scope(env, scope);
}

static void on_closed(uv_handle_t* h) {
  port_t* p = (port_t*)h->data;
  free(p->bufs);
  free(p);
}

static void finalize(napi_env env, void* data, void* hint) {
  port_t* p = (port_t*)data;
  if (!p->closed) {
    p->closed = 1;
    uv_poll_stop(&p->poll);
    close(p->fd);
    uv_close((uv_handle_t*)&p->poll, on_closed);
  }
}

// Creates the socket and binds it to `name`; both happen in the calling thread's network namespace.
static int open_bound(const char* name, int* err, const char** what) {
  unsigned idx = if_nametoindex(name);
  if (idx == 0) {
    *err = errno;
    *what = name;
    return -1;
  }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) {
    *err = errno;
    *what = "socket(AF_PACKET)";
    return -1;
  }
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) {
    *err = errno;
    *what = "PACKET_VNET_HDR";
    close(fd);
    return -1;
  }
  // Our own writes to the interface must not come back as reads.
  setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
  int rcvbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)idx;
  if (bind(fd, (struct sockaddr*)&sll, sizeof sll) < 0) {
    *err = errno;
    *what = "bind(AF_PACKET)";
    close(fd);
    return -1;
  }
  return fd;
}

// Arena mode, when `arena` is set: rx = JS Buffer of slots, meta = Uint32Array of lengths.
typedef struct {
  unsigned char* rx;
  size_t rx_len;
  size_t slot;
  uint32_t slots;
  uint32_t* meta;
  uint32_t meta_pairs;
  napi_value rx_value;
  napi_value meta_value;
} arena_args_t;

// With `netns` (a namespace file such as /run/netns/x) the socket is created inside that network
// namespace (the thread enters it for the two calls and returns); a socket keeps the namespace it
// was created in, so the agent can serve devices of a namespace it does not run in.
static napi_value open_port(napi_env env, napi_value name_v, napi_value cb, napi_value ns_v,
                            const arena_args_t* arena) {
  char name[IF_NAMESIZE + 1];
  size_t len;
  if (napi_get_value_string_utf8(env, name_v, name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "afpacket.open: ifname must be a string");
    return NULL;
  }
  char nspath[512] = "";
  if (ns_v) {
    napi_valuetype t;
    napi_typeof(env, ns_v, &t);
    if (t == napi_string && napi_get_value_string_utf8(env, ns_v, nspath, sizeof nspath, &len) != napi_ok) {
      napi_throw_type_error(env, NULL, "afpacket.open: netns must be a string");
      return NULL;
    }
  }
  int err = 0;
  const char* what = "";
  int fd;
  if (nspath[0] != '\0') {
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) return throw_errno(env, "/proc/thread-self/ns/net", errno);
    int target = open(nspath, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
      int e = errno;
      close(self);
      return throw_errno(env, nspath, e);
    }
    if (setns(target, CLONE_NEWNET) < 0) {
      int e = errno;
      close(self);
      close(target);
      return throw_errno(env, "setns", e);
    }
    fd = open_bound(name, &err, &what);
    if (setns(self, CLONE_NEWNET) < 0) abort(); // never leave the main thread in the wrong namespace
    close(self);
    close(target);
  } else {
    fd = open_bound(name, &err, &what);
  }
  if (fd < 0) return throw_errno(env, what, err);
  port_t* p = calloc(1, sizeof(port_t));
  if (p && !arena) p->bufs = malloc((size_t)BATCH * FRAME_MAX);
  if (!p || (!arena && !p->bufs)) {
    close(fd);
    free(p);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (arena) {
    p->arena = arena->rx;
    p->arena_len = arena->rx_len;
    p->slot = arena->slot;
    p->slots = arena->slots;
    p->meta = arena->meta;
    p->meta_pairs = arena->meta_pairs;
    napi_create_reference(env, arena->rx_value, 1, &p->arena_ref);
    napi_create_reference(env, arena->meta_value, 1, &p->meta_ref);
  }
  p->fd = fd;
  p->env = env;
  napi_value handle = new_callback_handle(env, p, finalize, cb, "isthmus.afpacket", &p->callback,
                                          &p->self, &p->async);
  poll_readable(env, &p->poll, fd, p, on_readable);
  return handle;
}

// open(ifname: string, onFrames: (frames: Buffer[]) => void, netns?: string): handle
// Each batch arrives as fresh Buffers (copies); the kernel datapath's upcall device reads this way.
static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = get_args(env, info, 3, argv);
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "open(ifname, onFrames, netns?)");
    return NULL;
  }
  return open_port(env, argv[0], argv[1], argc >= 3 ? argv[2] : NULL, NULL);
}

// openArena(ifname, arena: Buffer, slot, slots, meta: Uint32Array, onBatch: (count) => void, netns?)
// Frames are received into the first `slots` slots of `arena`; offloads are finished in C, with
// segments written to the rest of the arena; `onBatch(count)` gets `count` (offset, length) pairs in
// `meta` (length 0: a dropped frame, its drop code in the offset). Everything is reused by the next
// batch, so JS copies what it keeps.
static napi_value OpenArena(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  size_t argc = get_args(env, info, 7, argv);
  arena_args_t a;
  memset(&a, 0, sizeof a);
  size_t rx_len = 0, meta_n = 0;
  uint32_t slot = 0, slots = 0;
  bool is_buf = false;
  napi_typedarray_type tt;
  napi_value ab;
  size_t off;
  void* rx = NULL;
  void* meta = NULL;
  if (argc < 6 || napi_is_buffer(env, argv[1], &is_buf) != napi_ok || !is_buf ||
      napi_get_buffer_info(env, argv[1], &rx, &rx_len) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &slot) != napi_ok || slot < 64 ||
      napi_get_value_uint32(env, argv[3], &slots) != napi_ok || slots == 0 || slots > BATCH ||
      napi_get_typedarray_info(env, argv[4], &tt, &meta_n, &meta, &ab, &off) != napi_ok ||
      tt != napi_uint32_array) {
    napi_throw_type_error(env, NULL,
                          "openArena(ifname, arena: Buffer, slot, slots ≤ 32, meta: Uint32Array, onBatch, netns?)");
    return NULL;
  }
  if ((size_t)slots * slot > rx_len || meta_n / 2 < slots) {
    napi_throw_range_error(env, NULL, "openArena: the arena is smaller than its slots, or meta holds fewer pairs");
    return NULL;
  }
  a.rx = rx;
  a.rx_len = rx_len;
  a.slot = slot;
  a.slots = slots;
  a.meta = meta;
  a.meta_pairs = (uint32_t)(meta_n / 2);
  a.rx_value = argv[1];
  a.meta_value = argv[4];
  return open_port(env, argv[0], argv[5], argc >= 7 ? argv[6] : NULL, &a);
}

// finishOffloads(arena: Buffer, len, segStart, meta: Uint32Array): count — the C offload path on
// one buffer at arena[0, len), segments from segStart on, for tests against vnet-offload.ts.
static napi_value FinishOffloads(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = get_args(env, info, 4, argv);
  void* buf = NULL;
  void* meta = NULL;
  size_t buf_len = 0, meta_n = 0, off;
  uint32_t len = 0, seg_start = 0;
  napi_typedarray_type tt;
  napi_value ab;
  if (argc < 4 || napi_get_buffer_info(env, argv[0], &buf, &buf_len) != napi_ok ||
      napi_get_value_uint32(env, argv[1], &len) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &seg_start) != napi_ok ||
      napi_get_typedarray_info(env, argv[3], &tt, &meta_n, &meta, &ab, &off) != napi_ok ||
      tt != napi_uint32_array || len > seg_start || seg_start > buf_len || meta_n < 2) {
    napi_throw_type_error(env, NULL, "finishOffloads(arena, len, segStart, meta)");
    return NULL;
  }
  unsigned char* b = buf;
  vnet_out_t o = {b, b + seg_start, buf_len - seg_start, 0, meta, (uint32_t)(meta_n / 2), 0};
  vnet_finish(&o, b, len, 0);
  napi_value out;
  napi_create_uint32(env, o.n, &out);
  return out;
}

DEFINE_UNWRAP(port_t, "afpacket: port is closed")

// send(handle, frames: Buffer[]): number written (EAGAIN stops early; the rest are the caller's drops)
static napi_value Send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  get_args(env, info, 2, argv);
  port_t* p = unwrap(env, argv[0]);
  if (!p) return NULL;
  uint32_t count;
  napi_get_array_length(env, argv[1], &count);
  static unsigned char zero_hdr[VNET_HDR];
  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH][2];
  uint32_t sent = 0;
  while (sent < count) {
    uint32_t n = count - sent < BATCH ? count - sent : BATCH;
    for (uint32_t i = 0; i < n; i++) {
      napi_value b;
      void* data;
      size_t blen;
      napi_get_element(env, argv[1], sent + i, &b);
      napi_get_buffer_info(env, b, &data, &blen);
      iovs[i][0].iov_base = zero_hdr;
      iovs[i][0].iov_len = VNET_HDR;
      iovs[i][1].iov_base = data;
      iovs[i][1].iov_len = blen;
      memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
      msgs[i].msg_hdr.msg_iov = iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 2;
    }
    int r = sendmmsg(p->fd, msgs, n, MSG_DONTWAIT);
    if (r <= 0) {
      // A frame the device refuses (too big, bad) must not block the ones after it.
      if (r < 0 && errno != EAGAIN && errno != ENOBUFS) {
        sent++;
        continue;
      }
      break;
    }
    sent += (uint32_t)r;
  }
  napi_value out;
  napi_create_uint32(env, sent, &out);
  return out;
}

// sendArena(handle, tx: Buffer, meta: Uint32Array, count): frame i is tx[meta[2i], +meta[2i+1]];
// each goes out behind a zero virtio_net_hdr. Same return and error handling as send.
static napi_value SendArena(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  get_args(env, info, 4, argv);
  port_t* p = unwrap(env, argv[0]);
  if (!p) return NULL;
  void* tx = NULL;
  size_t tx_len = 0, meta_n = 0, off;
  void* meta = NULL;
  napi_typedarray_type tt;
  napi_value ab;
  uint32_t count;
  if (napi_get_buffer_info(env, argv[1], &tx, &tx_len) != napi_ok ||
      napi_get_typedarray_info(env, argv[2], &tt, &meta_n, &meta, &ab, &off) != napi_ok ||
      tt != napi_uint32_array || napi_get_value_uint32(env, argv[3], &count) != napi_ok ||
      (size_t)count * 2 > meta_n) {
    napi_throw_type_error(env, NULL, "sendArena(handle, tx: Buffer, meta: Uint32Array, count)");
    return NULL;
  }
  const uint32_t* m = meta;
  static unsigned char zero_hdr[VNET_HDR];
  struct mmsghdr msgs[BATCH];
  struct iovec iovs[BATCH][2];
  uint32_t done = 0, sent = 0;
  while (done < count) {
    uint32_t n = count - done < BATCH ? count - done : BATCH;
    for (uint32_t i = 0; i < n; i++) {
      uint32_t o = m[2 * (done + i)], l = m[2 * (done + i) + 1];
      if ((size_t)o + l > tx_len) {
        napi_throw_range_error(env, NULL, "sendArena: frame outside the arena");
        return NULL;
      }
      iovs[i][0].iov_base = zero_hdr;
      iovs[i][0].iov_len = VNET_HDR;
      iovs[i][1].iov_base = (unsigned char*)tx + o;
      iovs[i][1].iov_len = l;
      memset(&msgs[i].msg_hdr, 0, sizeof(struct msghdr));
      msgs[i].msg_hdr.msg_iov = iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 2;
    }
    int r = sendmmsg(p->fd, msgs, n, MSG_DONTWAIT);
    if (r <= 0) {
      if (r < 0 && errno != EAGAIN && errno != ENOBUFS) {
        done++; // a frame the device refuses must not block the ones after it
        continue;
      }
      break;
    }
    done += (uint32_t)r;
    sent += (uint32_t)r;
  }
  napi_value out;
  napi_create_uint32(env, sent, &out);
  return out;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  port_t* p = NULL;
  if (napi_unwrap(env, argv[0], (void**)&p) != napi_ok || !p || p->closed) return NULL;
  p->closed = 1;
  uv_poll_stop(&p->poll);
  close(p->fd);
  napi_delete_reference(env, p->callback);
  if (p->arena_ref) napi_delete_reference(env, p->arena_ref);
  if (p->meta_ref) napi_delete_reference(env, p->meta_ref);
  napi_async_destroy(env, p->async);
  void* unused;
  napi_remove_wrap(env, argv[0], &unused);
  uv_close((uv_handle_t*)&p->poll, on_closed);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("open", Open),
      NAPI_METHOD("send", Send),
      NAPI_METHOD("close", Close),
      NAPI_METHOD("openArena", OpenArena),
      NAPI_METHOD("sendArena", SendArena),
      NAPI_METHOD("finishOffloads", FinishOffloads),
  };
  return EXPORT_METHODS(env, exports, props);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
