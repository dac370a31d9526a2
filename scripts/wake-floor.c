// The machine's own wake-up floor, the part of a flow setup's *wake* stage no agent can remove:
// one process sends a datagram every period (2 ms, the datapath bench's pace of new flows) and
// another, blocked in epoll_wait, records how long after the stamp it was running again.
//   udp:  the stamp (CLOCK_MONOTONIC) is taken by the sender just before sendto on 127.0.0.1;
//         the receiver wakes on its UDP socket.
//   ring: the datagram goes to a socket whose filter (a ten-instruction BPF program loaded here)
//         stamps bpf_ktime_get_ns (the same clock) and writes it to a BPF ring buffer; the
//         receiver wakes on the ring's fd, as the agent does for misses (the program's notify
//         goes through irq_work, like the TC programs' bpf_ringbuf_submit).
//   poll: the ring, but the receiver never sleeps: it spins on the ring's producer position (as
//         the agent does inside a busy-poll window), so what is left is the record's way to it.
// The receiver runs at the given nice value and EEVDF slice (the agent's defaults: -10, 100 us).
// PLACE: any (the scheduler picks the receiver's CPU; it mostly follows the sender's), same (both
// on CPU 0: the receiver has to take the sender's CPU), cross (sender on CPU 0, receiver on CPU 1,
// which is idle when the datagram comes: the cost of waking an idle vCPU).
// Built and run by scripts/wake-floor.mjs; usage:
//   wake-floor udp|ring|poll SAMPLES PERIOD_US NICE SLICE_US any|same|cross
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 200
#define RING_BYTES (64 * 4096)

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void die(const char* what) {
  fprintf(stderr, "wake-floor: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
}

static long sys_bpf(int cmd, union bpf_attr* a) { return syscall(__NR_bpf, cmd, a, sizeof *a); }

// The stamping program: { cpu, ktime } to the ring, then drop the datagram (return 0).
static int load_stamper(int map_fd) {
  struct bpf_insn p[] = {
      {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_get_smp_processor_id},
      {.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = BPF_REG_10, .src_reg = BPF_REG_0, .off = -16},
      {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_ktime_get_ns},
      {.code = BPF_STX | BPF_MEM | BPF_DW, .dst_reg = BPF_REG_10, .src_reg = BPF_REG_0, .off = -8},
      {.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map_fd},
      {0},
      {.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_10},
      {.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_2, .imm = -16},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = 16},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_4, .imm = 0},
      {.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_ringbuf_output},
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
      {.code = BPF_JMP | BPF_EXIT},
  };
  static char log[65536];
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  a.insns = (uint64_t)(uintptr_t)p;
  a.insn_cnt = sizeof p / sizeof p[0];
  a.license = (uint64_t)(uintptr_t) "GPL";
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof log;
  a.log_level = 1;
  int fd = (int)sys_bpf(BPF_PROG_LOAD, &a);
  if (fd < 0) {
    fprintf(stderr, "%s\n", log);
    die("BPF_PROG_LOAD");
  }
  return fd;
}

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

static double pct_us(uint64_t* s, size_t n, double p) {
  if (n == 0) return -1;
  size_t i = (size_t)(p / 100.0 * (double)n + 0.999999);
  if (i < 1) i = 1;
  if (i > n) i = n;
  return (double)s[i - 1] / 1000.0;
}

static void print_set(const char* name, uint64_t* s, size_t n) {
  qsort(s, n, sizeof *s, cmp_u64);
  printf("\"%s\":{\"n\":%zu,\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f,\"p999Us\":%.1f,\"maxUs\":%.1f}", name, n,
         pct_us(s, n, 50), pct_us(s, n, 90), pct_us(s, n, 99), pct_us(s, n, 99.9), pct_us(s, n, 100));
}

int main(int argc, char** argv) {
  if (argc != 7 || (strcmp(argv[1], "udp") != 0 && strcmp(argv[1], "ring") != 0 && strcmp(argv[1], "poll") != 0) ||
      (strcmp(argv[6], "any") != 0 && strcmp(argv[6], "same") != 0 && strcmp(argv[6], "cross") != 0)) {
    fprintf(stderr, "usage: wake-floor udp|ring|poll SAMPLES PERIOD_US NICE SLICE_US any|same|cross\n");
    return 2;
  }
  const char* place = argv[6];
  int pinned = strcmp(place, "any") != 0;
  int polling = strcmp(argv[1], "poll") == 0;
  int ring = polling || strcmp(argv[1], "ring") == 0;
  size_t samples = (size_t)atol(argv[2]);
  long period_us = atol(argv[3]);
  int nice_v = atoi(argv[4]);
  long slice_us = atol(argv[5]);
  if (samples < 1 || samples > 1000000 || period_us < 10 || period_us > 1000000) {
    fprintf(stderr, "wake-floor: SAMPLES 1..1000000, PERIOD_US 10..1000000\n");
    return 2;
  }

  int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (rx < 0) die("socket");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(rx, (struct sockaddr*)&addr, sizeof addr) < 0) die("bind");
  socklen_t alen = sizeof addr;
  if (getsockname(rx, (struct sockaddr*)&addr, &alen) < 0) die("getsockname");

  int map_fd = -1;
  volatile unsigned long* cons = NULL;
  volatile unsigned long* prod = NULL;
  unsigned char* data = NULL;
  if (ring) {
    union bpf_attr a;
    memset(&a, 0, sizeof a);
    a.map_type = BPF_MAP_TYPE_RINGBUF;
    a.max_entries = RING_BYTES;
    map_fd = (int)sys_bpf(BPF_MAP_CREATE, &a);
    if (map_fd < 0) die("BPF_MAP_CREATE ringbuf");
    long page = sysconf(_SC_PAGESIZE);
    void* c = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    void* p = mmap(NULL, (size_t)page + 2 * RING_BYTES, PROT_READ, MAP_SHARED, map_fd, page);
    if (c == MAP_FAILED || p == MAP_FAILED) die("mmap ring");
    cons = c;
    prod = p;
    data = (unsigned char*)p + page;
    int prog = load_stamper(map_fd);
    if (setsockopt(rx, SOL_SOCKET, SO_ATTACH_BPF, &prog, sizeof prog) < 0) die("SO_ATTACH_BPF");
  }

  size_t total = samples + WARMUP;
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    // The sender, at the nice value it was started with: one datagram per period, absolute times.
    if (pinned) pin(0);
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    if (tx < 0) die("sender socket");
    if (connect(tx, (struct sockaddr*)&addr, sizeof addr) < 0) die("connect");
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    next.tv_sec += 1; // let the receiver block first
    for (size_t i = 0; i < total + 20; i++) {
      next.tv_nsec += period_us * 1000;
      while (next.tv_nsec >= 1000000000) {
        next.tv_nsec -= 1000000000;
        next.tv_sec++;
      }
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
      }
      uint64_t msg[2] = {(uint64_t)sched_getcpu(), now_ns()};
      if (send(tx, msg, sizeof msg, 0) < 0 && errno != ECONNREFUSED) die("send");
    }
    _exit(0);
  }

  if (pinned) pin(strcmp(place, "cross") == 0 ? 1 : 0);
  if (setpriority(PRIO_PROCESS, 0, nice_v) < 0) die("setpriority (the receiver's nice)");
  if (slice_us > 0) {
    // struct sched_attr, SCHED_ATTR_SIZE_VER1: SCHED_OTHER with sched_runtime = the slice.
    struct {
      uint32_t size, policy;
      uint64_t flags;
      int32_t nice;
      uint32_t prio;
      uint64_t runtime, deadline, period;
      uint32_t umin, umax;
    } sa = {.size = 56, .nice = nice_v, .runtime = (uint64_t)slice_us * 1000};
    if (syscall(SYS_sched_setattr, 0, &sa, 0) < 0) die("sched_setattr (the receiver's slice)");
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, ring ? map_fd : rx, &ev) < 0) die("epoll_ctl");
  uint64_t* all = calloc(samples, sizeof *all);
  uint64_t* same = calloc(samples, sizeof *same);
  uint64_t* other = calloc(samples, sizeof *other);
  size_t got = 0, n_all = 0, n_same = 0, n_other = 0;
  while (got < total) {
    struct epoll_event out;
    int k;
    if (polling) {
      // Spin until the producer moves (5 s at most), never blocking.
      uint64_t until = now_ns() + 5000000000ull;
      while (*cons >= __atomic_load_n(prod, __ATOMIC_ACQUIRE) && now_ns() < until) cpu_relax();
      k = *cons < __atomic_load_n(prod, __ATOMIC_ACQUIRE) ? 1 : 0;
    } else {
      k = epoll_wait(ep, &out, 1, 5000);
    }
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      fprintf(stderr, "wake-floor: nothing arrived for 5 s after %zu samples\n", got);
      kill(child, SIGTERM);
      return 1;
    }
    uint64_t t = now_ns();
    int cpu = sched_getcpu();
    // Every record or datagram that is there now (normally one).
    for (;;) {
      uint64_t msg[2];
      if (ring) {
        unsigned long c = *cons, p = __atomic_load_n(prod, __ATOMIC_ACQUIRE);
        if (c >= p) break;
        uint32_t* hdr = (uint32_t*)(data + (c & (RING_BYTES - 1)));
        uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
        if (len & BPF_RINGBUF_BUSY_BIT) break;
        memcpy(msg, hdr + 2, sizeof msg);
        __atomic_store_n(cons, c + ((((len & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)) + 8) + 7) & ~7UL),
                         __ATOMIC_RELEASE);
      } else if (recv(rx, msg, sizeof msg, MSG_DONTWAIT) != sizeof msg) {
        break;
      }
      if (got++ < WARMUP) continue;
      if (n_all >= samples) break;
      uint64_t d = t > msg[1] ? t - msg[1] : 0;
      all[n_all++] = d;
      if ((int)msg[0] == cpu) same[n_same++] = d;
      else other[n_other++] = d;
    }
  }
  kill(child, SIGTERM);
  waitpid(child, NULL, 0);
  printf("{\"mode\":\"%s\",\"place\":\"%s\",\"periodUs\":%ld,\"nice\":%d,\"sliceUs\":%ld,", argv[1], place,
         period_us, nice_v, slice_us);
  print_set("all", all, n_all);
  printf(",");
  print_set("senderCpu", same, n_same);
  printf(",");
  print_set("otherCpu", other, n_other);
  printf("}\n");
  return 0;
}
