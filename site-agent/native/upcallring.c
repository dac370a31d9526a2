// Reader of the kernel fast path's upcall ring (BPF_MAP_TYPE_RINGBUF `upcall_ring` in
// site-agent/bpf/flow.bpf.c): the map is mmapped, libuv polls its fd on the event loop (the kernel
// wakes it when the programs submit a record), and each batch of records reaches JavaScript as
// Buffers laid out as the upcall veth delivers them — `[virtio_net_hdr (zero)][upcall_hdr][frame]`
// — so one parser serves both. The ring cannot say whether a frame's L4 checksum was left for
// offload (CHECKSUM_PARTIAL, as frames from a VM's veth are), so TCP/UDP checksums over IPv4 and
// IPv6 are recomputed here before the agent sees the frame.
//
// Busy polling (setBusyPoll, 0 = off): after a batch the event loop is kept from blocking for a
// window (a libuv idle handle makes its poll phase return at once), and each turn of the loop reads
// the ring's positions from the shared mapping; a miss in the window is read on the next turn
// without the thread going to sleep, so it never pays for a wake-up — on a guest without a cpuidle
// driver a wake-up on the other, halted vCPU costs ~85 µs at the median and milliseconds at p99. A
// window with no miss closes and the loop blocks in epoll again. The cost is a CPU kept busy for
// the window after every miss; the counters (stats) say how much.
//
// Polling pays only while the thread keeps its CPU. A polling thread that another task preempts
// is runnable, not woken, so it gets the CPU back when the scheduler next picks it (at a tick, 4 ms
// here) — while a sleeping thread woken by the miss preempts at once (its short slice). So a window
// also ends when the thread is seen to have lost its CPU (the clock jumps by more than
// PREEMPTED_NS between two reads inside the spin, where nothing else runs on this thread), and
// no window opens for a pause after that (100 ms by default): on a busy CPU the agent sleeps and
// is woken, as without busy polling.
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "napi-call.h"
// Only the checksum helpers are used here.
#pragma GCC diagnostic ignored "-Wunused-function"
#include "vnet-offload.h"

#define UPCALL_HDR 40
#define RECORD_FRAME_AT 48 // struct ring_upcall: header, frame_len u32, pad u32, frame
#define BATCH 64
#define ROUNDS 4

typedef struct {
  int fd;
  uv_poll_t poll;
  // Runs before every poll of the loop: stamps when the loop last went to wait (times[0]).
  uv_prepare_t prepare;
  // Active while a busy-poll window is open: keeps the loop from blocking, reads the ring each turn.
  uv_idle_t idle;
  // The window's length after a batch (ns; 0 = busy polling off), and the open window's bounds.
  uint64_t busy_ns;
  int polling;
  uint64_t window_start;
  uint64_t window_end;
  // Busy-poll counters: windows opened, time spent in closed windows (ns), loop turns that polled,
  // and records read while a window was open (the loop never blocked) vs after a wake-up.
  uint64_t poll_windows;
  uint64_t poll_ns;
  uint64_t poll_turns;
  uint64_t records_polled;
  uint64_t records_woken;
  // Windows ended because the thread lost its CPU while polling, and until when none opens (ns).
  uint64_t poll_preempted;
  uint64_t backoff_until;
  uint64_t backoff_ns;
  // Real-time polling (rt_prio > 0): while a window is open the loop thread runs SCHED_FIFO at
  // rt_prio, so nothing of the fair class preempts it, and gets its own attributes (policy, nice,
  // slice) back when the window closes. Refused by the kernel (no privilege): off, counted.
  int rt_prio;
  int rt_on;
  uint64_t rt_failures;
  struct sched_attr_v1 {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
    uint32_t util_min, util_max;
  } rt_saved;
  // Handles still to be closed before the struct is freed.
  int open_handles;
  napi_env env;
  napi_ref callback;
  napi_ref self;
  napi_async_context async;
  int closed;
  unsigned long* consumer_pos;
  unsigned long* producer_pos;
  unsigned char* data;
  size_t mask;
  size_t page;
  size_t ring_size;
  // Records whose frame_len was bad (never more than the record holds): dropped and counted.
  uint32_t malformed;
  // The caller's Float64Array (held by `times_ref`), CLOCK_MONOTONIC ms: [0] when the event loop
  // last went to wait for events, [1] when the reader was entered for the batch being delivered,
  // [2] when its callback was called, [3] 1 when the batch was read while a busy-poll window was
  // open (no wake-up), else 0. Splits the flow-setup profile's *wake* stage: the loop busy with
  // something else, the thread's wake-up, the reader's own work.
  double* times;
  napi_ref times_ref;
} ring_t;

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double mono_ms(void) {
  return (double)mono_ns() / 1e6;
}

static void on_prepare(uv_prepare_t* handle) {
  ring_t* r = (ring_t*)handle->data;
  r->times[0] = mono_ms();
}

// Recomputes the TCP/UDP checksum of an untagged IPv4 (unfragmented) or IPv6 (no extension
// header) frame. A zero UDP checksum over IPv4 means "none" and stays zero.
static void finish_l4_checksum(unsigned char* f, size_t len) {
  if (len < 14) return;
  uint16_t et = rd16(f + 12);
  vnet_l3_t h;
  uint32_t proto, l4len;
  if (et == 0x0800) {
    if (vnet_locate(f, len, 0, &h) < 0 || (f[14] >> 4) != 4 || h.l4 < 34) return;
    if (rd16(f + 14 + 6) & 0x3fff) return; // a fragment: the L4 header is not (all) here
    size_t tot = rd16(f + 14 + 2);
    if (tot < h.l4 - 14 || 14 + tot > len) return;
    proto = f[14 + 9];
    l4len = (uint32_t)(14 + tot - h.l4);
  } else if (et == 0x86dd) {
    if (vnet_locate(f, len, 1, &h) < 0) return;
    proto = f[14 + 6];
    l4len = rd16(f + 14 + 4);
    if (h.l4 + l4len > len) return;
  } else {
    return;
  }
  size_t at;
  if (proto == 6 && l4len >= 20) at = h.l4 + 16;
  else if (proto == 17 && l4len >= 8) at = h.l4 + 6;
  else return;
  if (proto == 17 && !h.v6 && rd16(f + at) == 0) return;
  wr16(f + at, 0);
  uint16_t sum = (uint16_t)~vnet_fold(vnet_sum16(f + h.l4, l4len, vnet_pseudo(f, &h, proto, l4len)));
  if (proto == 17 && sum == 0) sum = 0xffff;
  wr16(f + at, sum);
}

// Reads what the ring holds, up to ROUNDS batches of BATCH records (a record written while a
// batch is handled is read in the next round without another wake-up), and calls back with each;
// returns the records delivered. times[1] must be stamped by the caller.
static uint32_t drain(ring_t* r) {
  napi_env env = r->env;
  uint32_t delivered = 0;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  for (int round = 0; round < ROUNDS && !r->closed; round++) {
    unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
    unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
    if (cons >= prod) break;
    napi_value arr;
    napi_create_array(env, &arr);
    uint32_t n = 0;
    while (cons < prod && n < BATCH) {
      uint32_t* hdr = (uint32_t*)(r->data + (cons & r->mask));
      uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
      if (len & BPF_RINGBUF_BUSY_BIT) break; // reserved, not yet submitted
      uint32_t body = len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
      const unsigned char* rec = (const unsigned char*)hdr + BPF_RINGBUF_HDR_SZ;
      if (!(len & BPF_RINGBUF_DISCARD_BIT)) {
        uint32_t frame_len = body >= RECORD_FRAME_AT ? *(const uint32_t*)(rec + UPCALL_HDR) : 0;
        if (frame_len < 14 || (size_t)RECORD_FRAME_AT + frame_len > body) {
          r->malformed++;
        } else {
          void* out;
          napi_value buf;
          napi_create_buffer(env, VNET_HDR_LEN + UPCALL_HDR + frame_len, &out, &buf);
          unsigned char* o = out;
          memset(o, 0, VNET_HDR_LEN);
          memcpy(o + VNET_HDR_LEN, rec, UPCALL_HDR);
          memcpy(o + VNET_HDR_LEN + UPCALL_HDR, rec + RECORD_FRAME_AT, frame_len);
          finish_l4_checksum(o + VNET_HDR_LEN + UPCALL_HDR, frame_len);
          napi_set_element(env, arr, n++, buf);
        }
      }
      cons += (body + BPF_RINGBUF_HDR_SZ + 7) & ~7UL;
      // Give the record's room back before calling JavaScript, so the programs can use it.
      __atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
    }
    if (n == 0) {
      if (cons < prod) break; // the next record is still being written: poll again
      continue;
    }
    if (r->polling) r->records_polled += n;
    else r->records_woken += n;
    delivered += n;
    r->times[3] = r->polling ? 1 : 0;
    r->times[2] = mono_ms();
    if (call_back(env, r->async, r->self, r->callback, arr)) break;
    r->times[1] = mono_ms(); // a further round's batch was read from here
  }
  napi_close_handle_scope(env, scope);
  return delivered;
}

static void on_idle(uv_idle_t* handle);

static void rt_enter(ring_t* r) {
  if (r->rt_prio <= 0 || r->rt_on) return;
  memset(&r->rt_saved, 0, sizeof r->rt_saved);
  struct sched_attr_v1 fifo = {.size = sizeof fifo, .policy = SCHED_FIFO, .priority = (uint32_t)r->rt_prio};
  if (syscall(SYS_sched_getattr, 0, &r->rt_saved, sizeof r->rt_saved, 0) < 0 ||
      syscall(SYS_sched_setattr, 0, &fifo, 0) < 0) {
    r->rt_failures++;
    r->rt_prio = 0;
    return;
  }
  r->rt_saved.size = sizeof r->rt_saved;
  r->rt_saved.flags = 0;
  r->rt_on = 1;
}

static void rt_leave(ring_t* r) {
  if (!r->rt_on) return;
  r->rt_on = 0;
  if (syscall(SYS_sched_setattr, 0, &r->rt_saved, 0) < 0) r->rt_failures++;
}

static void close_window(ring_t* r, uint64_t now) {
  if (!r->polling) return;
  uv_idle_stop(&r->idle);
  r->polling = 0;
  r->poll_ns += now - r->window_start;
  rt_leave(r);
}

// After a batch was delivered: the window runs busy_ns from now (the callback done), opened if
// it was not open.
static void open_window(ring_t* r) {
  if (r->closed || r->busy_ns == 0) return;
  uint64_t now = mono_ns();
  if (now < r->backoff_until) return;
  r->window_end = now + r->busy_ns;
  if (r->polling) return;
  r->polling = 1;
  r->window_start = now;
  r->poll_windows++;
  rt_enter(r);
  uv_idle_start(&r->idle, on_idle);
}

// One turn of the loop while a window is open: watch the ring's positions for up to SPIN_NS (so the
// loop's own per-turn work — timers, an epoll_wait with no timeout — runs ~20,000 times a second
// rather than ~400,000) and read what the programs wrote; close the window once it has passed
// without a record, or when the thread lost its CPU in the spin. Other handles wait at most
// SPIN_NS for their turn.
#define SPIN_NS 50000
// A jump of the clock between two reads in the spin longer than this is the thread (or its vCPU)
// having been off the CPU; polling then stops for backoff_ns (BACKOFF_NS unless set).
#define PREEMPTED_NS 200000
#define BACKOFF_NS 100000000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static void on_idle(uv_idle_t* handle) {
  ring_t* r = (ring_t*)handle->data;
  if (r->closed) return;
  r->poll_turns++;
  uint64_t now = mono_ns();
  uint64_t until = now + SPIN_NS < r->window_end ? now + SPIN_NS : r->window_end;
  for (;;) {
    unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
    unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
    if (cons < prod) {
      r->times[1] = mono_ms();
      if (drain(r) > 0) {
        open_window(r);
        return;
      }
    }
    uint64_t prev = now;
    now = mono_ns();
    if (now - prev > PREEMPTED_NS) {
      r->poll_preempted++;
      r->backoff_until = now + r->backoff_ns;
      close_window(r, now);
      return;
    }
    if (r->busy_ns == 0 || now >= r->window_end) {
      close_window(r, now);
      return;
    }
    if (now >= until) return;
    cpu_relax();
  }
}

static void on_readable(uv_poll_t* handle, int status, int events) {
  ring_t* r = (ring_t*)handle->data;
  if (r->closed) return;
  r->times[1] = mono_ms();
  if (drain(r) > 0) open_window(r);
}

static void release(ring_t* r) {
  if (r->consumer_pos) munmap(r->consumer_pos, r->page);
  if (r->producer_pos) munmap(r->producer_pos, r->page + 2 * r->ring_size);
  r->consumer_pos = NULL;
  r->producer_pos = NULL;
}

static void on_closed(uv_handle_t* h) {
  ring_t* r = (ring_t*)h->data;
  if (--r->open_handles > 0) return;
  release(r);
  free(r);
}

static void stop(napi_env env, ring_t* r) {
  close_window(r, mono_ns());
  r->closed = 1;
  uv_poll_stop(&r->poll);
  uv_prepare_stop(&r->prepare);
  close(r->fd);
  if (r->times_ref) napi_delete_reference(env, r->times_ref);
  r->times_ref = NULL;
  r->open_handles = 3;
  uv_close((uv_handle_t*)&r->poll, on_closed);
  uv_close((uv_handle_t*)&r->prepare, on_closed);
  uv_close((uv_handle_t*)&r->idle, on_closed);
}

static void finalize(napi_env env, void* data, void* hint) {
  ring_t* r = (ring_t*)data;
  if (!r->closed) stop(env, r);
}

// open(mapFd, onRecords: (bufs: Buffer[]) => void, times: Float64Array(4)): handle. The fd is
// duplicated: the caller keeps (and closes) its own. `times` is written as described in ring_t.
static napi_value Open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = get_args(env, info, 3, argv);
  int32_t fd = -1;
  napi_valuetype t;
  napi_typedarray_type tt;
  size_t tlen = 0;
  void* tdata = NULL;
  bool is_ta = false;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function ||
      napi_is_typedarray(env, argv[2], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, argv[2], &tt, &tlen, &tdata, NULL, NULL) != napi_ok ||
      tt != napi_float64_array || tlen < 4) {
    napi_throw_type_error(env, NULL, "upcallring.open(mapFd, onRecords, times: Float64Array(4))");
    return NULL;
  }
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof mi);
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.info.bpf_fd = (uint32_t)fd;
  attr.info.info_len = sizeof mi;
  attr.info.info = (uint64_t)(uintptr_t)&mi;
  if (syscall(__NR_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof attr) < 0)
    return throw_errno(env, "upcallring: map info", errno);
  if (mi.type != BPF_MAP_TYPE_RINGBUF) {
    napi_throw_error(env, NULL, "upcallring: the map is not a ring buffer");
    return NULL;
  }
  ring_t* r = calloc(1, sizeof(ring_t));
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->page = (size_t)sysconf(_SC_PAGESIZE);
  r->ring_size = mi.max_entries;
  r->mask = mi.max_entries - 1;
  r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r->fd < 0) {
    int e = errno;
    free(r);
    return throw_errno(env, "upcallring: dup", e);
  }
  void* c = mmap(NULL, r->page, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
  void* p = c == MAP_FAILED ? MAP_FAILED
                            : mmap(NULL, r->page + 2 * r->ring_size, PROT_READ, MAP_SHARED, r->fd, (off_t)r->page);
  if (c == MAP_FAILED || p == MAP_FAILED) {
    int e = errno;
    if (c != MAP_FAILED) munmap(c, r->page);
    close(r->fd);
    free(r);
    return throw_errno(env, "upcallring: mmap", e);
  }
  r->consumer_pos = c;
  r->producer_pos = p;
  r->data = (unsigned char*)p + r->page;
  r->env = env;
  r->backoff_ns = BACKOFF_NS;
  r->times = tdata;
  napi_create_reference(env, argv[2], 1, &r->times_ref);
  napi_value handle = new_callback_handle(env, r, finalize, argv[1], "isthmus.upcallring", &r->callback,
                                          &r->self, &r->async);
  poll_readable(env, &r->poll, r->fd, r, on_readable);
  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  uv_prepare_init(loop, &r->prepare);
  r->prepare.data = r;
  uv_prepare_start(&r->prepare, on_prepare);
  uv_unref((uv_handle_t*)&r->prepare); // only the poll keeps the loop alive
  uv_idle_init(loop, &r->idle);
  r->idle.data = r;
  uv_unref((uv_handle_t*)&r->idle);
  return handle;
}

DEFINE_UNWRAP(ring_t, "upcallring: closed")

// stats(handle): { malformed, pending (bytes submitted and not yet read), busyPollUs, polling,
// pollWindows, pollMs (time with a window open, the open one included), pollTurns,
// recordsPolled, recordsWoken, pollPreempted }
static napi_value Stats(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  ring_t* r = unwrap(env, argv[0]);
  if (!r) return NULL;
  unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
  unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_uint32(env, r->malformed, &v);
  napi_set_named_property(env, out, "malformed", v);
  napi_create_double(env, (double)(prod - cons), &v);
  napi_set_named_property(env, out, "pending", v);
  napi_create_double(env, (double)(r->busy_ns / 1000), &v);
  napi_set_named_property(env, out, "busyPollUs", v);
  napi_get_boolean(env, r->polling != 0, &v);
  napi_set_named_property(env, out, "polling", v);
  uint64_t poll_ns = r->poll_ns + (r->polling ? mono_ns() - r->window_start : 0);
  const struct {
    const char* name;
    double value;
  } counters[] = {
      {"pollWindows", (double)r->poll_windows},
      {"pollMs", (double)poll_ns / 1e6},
      {"pollTurns", (double)r->poll_turns},
      {"recordsPolled", (double)r->records_polled},
      {"recordsWoken", (double)r->records_woken},
      {"pollPreempted", (double)r->poll_preempted},
      {"realtimePriority", (double)r->rt_prio},
      {"realtimeFailures", (double)r->rt_failures},
  };
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
    napi_create_double(env, counters[i].value, &v);
    napi_set_named_property(env, out, counters[i].name, v);
  }
  return out;
}

// The longest busy-poll window accepted (µs): past it the loop would be a spinning thread, not a
// bounded window after a miss.
#define BUSY_POLL_MAX_US 1000000

// setBusyPoll(handle, us, pauseUs = 100000, rtPriority = 0): the busy-poll window after each batch
// (0 = off), how long polling pauses after the thread was seen to lose its CPU, and the SCHED_FIFO
// priority the thread polls at (0: it stays as it is). An open window ends at its next turn when
// set to 0, or runs to its end at the new length from the next batch on.
static napi_value SetBusyPoll(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  size_t argc = get_args(env, info, 4, argv);
  ring_t* r = unwrap(env, argv[0]);
  if (!r) return NULL;
  double us = -1;
  double pause = BACKOFF_NS / 1000;
  double prio = 0;
  napi_valuetype t2 = napi_undefined, t3 = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &t2);
  if (argc >= 4) napi_typeof(env, argv[3], &t3);
  if (argc < 2 || napi_get_value_double(env, argv[1], &us) != napi_ok || !(us >= 0) ||
      us > BUSY_POLL_MAX_US || us != (double)(int64_t)us ||
      (t2 != napi_undefined &&
       (napi_get_value_double(env, argv[2], &pause) != napi_ok || !(pause >= 0) || pause > 60e6 ||
        pause != (double)(int64_t)pause)) ||
      (t3 != napi_undefined && (napi_get_value_double(env, argv[3], &prio) != napi_ok || !(prio >= 0) ||
                                prio > 99 || prio != (double)(int64_t)prio))) {
    napi_throw_range_error(env, "INVALID_ARGUMENT",
                           "upcallring.setBusyPoll(handle, us, pauseUs?, rtPriority?): us must be an integer from 0 "
                           "(off) to 1000000, pauseUs one from 0 to 60000000, rtPriority one from 0 to 99");
    return NULL;
  }
  r->busy_ns = (uint64_t)us * 1000;
  r->backoff_ns = (uint64_t)pause * 1000;
  r->rt_prio = (int)prio;
  return NULL;
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  get_args(env, info, 1, argv);
  ring_t* r = NULL;
  if (napi_unwrap(env, argv[0], (void**)&r) != napi_ok || !r || r->closed) return NULL;
  napi_delete_reference(env, r->callback);
  napi_async_destroy(env, r->async);
  void* unused;
  napi_remove_wrap(env, argv[0], &unused);
  stop(env, r);
  return NULL;
}

// finishChecksum(frame: Buffer): the reader's checksum completion on one frame, for tests.
static napi_value FinishChecksum(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = get_args(env, info, 1, argv);
  void* data;
  size_t len;
  if (argc < 1 || napi_get_buffer_info(env, argv[0], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "finishChecksum(frame: Buffer)");
    return NULL;
  }
  finish_l4_checksum(data, len);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("open", Open),
      NAPI_METHOD("stats", Stats),
      NAPI_METHOD("setBusyPoll", SetBusyPoll),
      NAPI_METHOD("close", Close),
      NAPI_METHOD("finishChecksum", FinishChecksum),
  };
  return EXPORT_METHODS(env, exports, props);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
