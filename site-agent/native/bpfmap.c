// N-API addon for the kernel fast path: BPF map access through the bpf() syscall on maps pinned in
// bpffs (obj_get, update, lookup, delete, next key, batch update and lookup). One syscall per call, so the
// agent installs flows without spawning bpftool per entry. Errors throw with the errno name.
#include <errno.h>
#include <linux/bpf.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "napi-call.h"

static long sys_bpf(int cmd, union bpf_attr *attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

// Errors carry the errno in their code ("E7" for E2BIG...) as well as its text.
static napi_value throw_bpf_errno(napi_env env, const char *what) { return throw_errno_code(env, what, errno); }

#define TOO_FEW "bpfmap: too few arguments"

static int get_buf(napi_env env, napi_value v, void **data, size_t *len) {
  bool is_buf = false;
  napi_is_buffer(env, v, &is_buf);
  if (!is_buf) {
    napi_throw_type_error(env, NULL, "bpfmap: expected a Buffer");
    return -1;
  }
  napi_get_buffer_info(env, v, data, len);
  return 0;
}

static napi_value num(napi_env env, double d) {
  napi_value r;
  napi_create_double(env, d, &r);
  return r;
}

// objGet(path) -> fd
static napi_value obj_get(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (need_args(env, info, 1, argv, TOO_FEW)) return NULL;
  char path[4096];
  size_t n;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "bpfmap: path must be a string");
    return NULL;
  }
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.pathname = (uint64_t)(uintptr_t)path;
  long fd = sys_bpf(BPF_OBJ_GET, &a);
  if (fd < 0) return throw_bpf_errno(env, path);
  return num(env, (double)fd);
}

// update(fd, key, value, flags)
static napi_value update(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (need_args(env, info, 4, argv, TOO_FEW)) return NULL;
  int32_t fd;
  uint32_t flags;
  void *k, *v;
  size_t kl, vl;
  napi_get_value_int32(env, argv[0], &fd);
  if (get_buf(env, argv[1], &k, &kl) || get_buf(env, argv[2], &v, &vl)) return NULL;
  napi_get_value_uint32(env, argv[3], &flags);
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = fd;
  a.key = (uint64_t)(uintptr_t)k;
  a.value = (uint64_t)(uintptr_t)v;
  a.flags = flags;
  if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0) return throw_bpf_errno(env, "bpf map update");
  return NULL;
}

// lookup(fd, key, out) -> true when found (value written into out)
static napi_value lookup(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (need_args(env, info, 3, argv, TOO_FEW)) return NULL;
  int32_t fd;
  void *k, *v;
  size_t kl, vl;
  napi_get_value_int32(env, argv[0], &fd);
  if (get_buf(env, argv[1], &k, &kl) || get_buf(env, argv[2], &v, &vl)) return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = fd;
  a.key = (uint64_t)(uintptr_t)k;
  a.value = (uint64_t)(uintptr_t)v;
  napi_value r;
  if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) < 0) {
    if (errno != ENOENT) return throw_bpf_errno(env, "bpf map lookup");
    napi_get_boolean(env, false, &r);
    return r;
  }
  napi_get_boolean(env, true, &r);
  return r;
}

// remove(fd, key) -> true when an entry was deleted
static napi_value remove_elem(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (need_args(env, info, 2, argv, TOO_FEW)) return NULL;
  int32_t fd;
  void *k;
  size_t kl;
  napi_get_value_int32(env, argv[0], &fd);
  if (get_buf(env, argv[1], &k, &kl)) return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = fd;
  a.key = (uint64_t)(uintptr_t)k;
  napi_value r;
  if (sys_bpf(BPF_MAP_DELETE_ELEM, &a) < 0) {
    if (errno != ENOENT) return throw_bpf_errno(env, "bpf map delete");
    napi_get_boolean(env, false, &r);
    return r;
  }
  napi_get_boolean(env, true, &r);
  return r;
}

// nextKey(fd, key | null, out) -> true when out holds the key after `key` (first key for null)
static napi_value next_key(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (need_args(env, info, 3, argv, TOO_FEW)) return NULL;
  int32_t fd;
  void *k = NULL, *out;
  size_t kl, ol;
  napi_valuetype t;
  napi_get_value_int32(env, argv[0], &fd);
  napi_typeof(env, argv[1], &t);
  if (t != napi_null && get_buf(env, argv[1], &k, &kl)) return NULL;
  if (get_buf(env, argv[2], &out, &ol)) return NULL;
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.map_fd = fd;
  a.key = (uint64_t)(uintptr_t)k;
  a.next_key = (uint64_t)(uintptr_t)out;
  napi_value r;
  if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &a) < 0) {
    if (errno != ENOENT) return throw_bpf_errno(env, "bpf map next key");
    napi_get_boolean(env, false, &r);
    return r;
  }
  napi_get_boolean(env, true, &r);
  return r;
}

// updateBatch(fd, keys, values, count, flags) -> number of entries written
static napi_value update_batch(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (need_args(env, info, 5, argv, TOO_FEW)) return NULL;
  int32_t fd;
  uint32_t count, flags;
  void *k, *v;
  size_t kl, vl;
  napi_get_value_int32(env, argv[0], &fd);
  if (get_buf(env, argv[1], &k, &kl) || get_buf(env, argv[2], &v, &vl)) return NULL;
  napi_get_value_uint32(env, argv[3], &count);
  napi_get_value_uint32(env, argv[4], &flags);
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.batch.map_fd = fd;
  a.batch.keys = (uint64_t)(uintptr_t)k;
  a.batch.values = (uint64_t)(uintptr_t)v;
  a.batch.count = count;
  a.batch.elem_flags = flags;
  if (sys_bpf(BPF_MAP_UPDATE_BATCH, &a) < 0) return throw_bpf_errno(env, "bpf map batch update");
  return num(env, (double)a.batch.count);
}

// lookupBatch(fd, inBatch | null, outBatch, keys, values, count) -> { count, done }
// One BPF_MAP_LOOKUP_BATCH: up to `count` entries into `keys`/`values` (count * key/value size
// bytes). `outBatch` receives the position to pass as `inBatch` next time (4 bytes for hash maps:
// a bucket index); `done` is true when the walk reached the end (ENOENT) — `count` may still be
// > 0 then. ENOSPC (a bucket holds more than `count` entries) throws; ask for more at a time.
static napi_value lookup_batch(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (need_args(env, info, 6, argv, TOO_FEW)) return NULL;
  int32_t fd;
  uint32_t count;
  void *in = NULL, *out, *k, *v;
  size_t inl = 0, outl, kl, vl;
  napi_valuetype t;
  napi_get_value_int32(env, argv[0], &fd);
  napi_typeof(env, argv[1], &t);
  if (t != napi_null && get_buf(env, argv[1], &in, &inl)) return NULL;
  if (get_buf(env, argv[2], &out, &outl) || get_buf(env, argv[3], &k, &kl) ||
      get_buf(env, argv[4], &v, &vl))
    return NULL;
  napi_get_value_uint32(env, argv[5], &count);
  if (outl < 8 || (in != NULL && inl < 8)) {
    napi_throw_range_error(env, NULL, "bpfmap: batch position buffers must hold 8 bytes");
    return NULL;
  }
  union bpf_attr a;
  memset(&a, 0, sizeof a);
  a.batch.map_fd = fd;
  a.batch.in_batch = (uint64_t)(uintptr_t)in;
  a.batch.out_batch = (uint64_t)(uintptr_t)out;
  a.batch.keys = (uint64_t)(uintptr_t)k;
  a.batch.values = (uint64_t)(uintptr_t)v;
  a.batch.count = count;
  bool done = false;
  if (sys_bpf(BPF_MAP_LOOKUP_BATCH, &a) < 0) {
    if (errno != ENOENT) return throw_bpf_errno(env, "bpf map batch lookup");
    done = true;
  }
  napi_value r, n, d;
  napi_create_object(env, &r);
  napi_create_uint32(env, a.batch.count, &n);
  napi_get_boolean(env, done, &d);
  napi_set_named_property(env, r, "count", n);
  napi_set_named_property(env, r, "done", d);
  return r;
}

static napi_value close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (need_args(env, info, 1, argv, TOO_FEW)) return NULL;
  int32_t fd;
  napi_get_value_int32(env, argv[0], &fd);
  if (close(fd) < 0) return throw_bpf_errno(env, "close bpf map fd");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("objGet", obj_get),
      NAPI_METHOD("update", update),
      NAPI_METHOD("lookup", lookup),
      NAPI_METHOD("remove", remove_elem),
      NAPI_METHOD("nextKey", next_key),
      NAPI_METHOD("updateBatch", update_batch),
      NAPI_METHOD("lookupBatch", lookup_batch),
      NAPI_METHOD("close", close_fd),
  };
  return EXPORT_METHODS(env, exports, props);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
