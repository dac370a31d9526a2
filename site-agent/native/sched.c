// The calling thread's EEVDF time slice (Linux ≥ 6.12: sched_setattr with sched_runtime on a
// SCHED_OTHER thread). A short slice does not give the thread more CPU; it lets the thread preempt
// the running task as soon as it wakes instead of after that task's slice, which is what a first
// packet waiting for the agent's event loop needs. Older kernels accept the call and ignore the
// runtime, which getSlice() then reports as the default.
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "napi-call.h"

// struct sched_attr (include/uapi/linux/sched/types.h), SCHED_ATTR_SIZE_VER1.
typedef struct {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;
  uint64_t sched_deadline;
  uint64_t sched_period;
  uint32_t sched_util_min;
  uint32_t sched_util_max;
} sched_attr_t;

static int get_attr(sched_attr_t* a) {
  memset(a, 0, sizeof *a);
  return (int)syscall(SYS_sched_getattr, 0, a, sizeof *a, 0);
}

// getSlice(): { policy, nice, sliceNs } of the calling thread (sliceNs: the kernel's sched_runtime,
// the base slice unless one was set).
static napi_value GetSlice(napi_env env, napi_callback_info info) {
  sched_attr_t a;
  if (get_attr(&a) < 0) return throw_errno(env, "sched_getattr", errno);
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_uint32(env, a.sched_policy, &v);
  napi_set_named_property(env, out, "policy", v);
  napi_create_int32(env, a.sched_nice, &v);
  napi_set_named_property(env, out, "nice", v);
  napi_create_double(env, (double)a.sched_runtime, &v);
  napi_set_named_property(env, out, "sliceNs", v);
  return out;
}

// setSlice(ns): sets the calling thread's slice, keeping its policy (must be SCHED_OTHER) and nice
// value; ns 0 returns it to the kernel's default. Throws with errno on failure.
static napi_value SetSlice(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = get_args(env, info, 1, argv);
  int64_t ns = -1;
  if (argc < 1 || napi_get_value_int64(env, argv[0], &ns) != napi_ok || ns < 0 || ns > 100000000) {
    napi_throw_range_error(env, NULL, "setSlice(ns): ns must be 0..100000000");
    return NULL;
  }
  sched_attr_t a;
  if (get_attr(&a) < 0) return throw_errno(env, "sched_getattr", errno);
  if (a.sched_policy != 0) {
    napi_throw_error(env, NULL, "setSlice: the thread is not SCHED_OTHER (a slice applies to fair tasks only)");
    return NULL;
  }
  sched_attr_t n;
  memset(&n, 0, sizeof n);
  n.size = sizeof n;
  n.sched_policy = 0;
  n.sched_nice = a.sched_nice;
  n.sched_runtime = (uint64_t)ns;
  if (syscall(SYS_sched_setattr, 0, &n, 0) < 0) return throw_errno(env, "sched_setattr", errno);
  return NULL;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      NAPI_METHOD("getSlice", GetSlice),
      NAPI_METHOD("setSlice", SetSlice),
  };
  return EXPORT_METHODS(env, exports, props);
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
