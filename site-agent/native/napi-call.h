// What every agent addon does at its boundary with JavaScript: fetch a call's arguments, throw an
// error naming what failed (with errno's text), export a table of functions, wrap a C object in
// a handle whose callback a libuv poll invokes, and unwrap it again while it is open. Header-only (static functions), included by each
// addon's single .c file, so build.mjs and binding.gyp still compile one file per addon.
#ifndef ISTHMUS_NAPI_CALL_H
#define ISTHMUS_NAPI_CALL_H

#include <errno.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

// Room for a path (PATH_MAX) plus errno's text, so a message naming a file is never cut short.
#define NAPI_CALL_MSG_MAX 4400

// Throws Error("<what>: <strerror(err)>"); returns NULL for `return throw_errno(...)`.
static inline napi_value throw_errno(napi_env env, const char* what, int err) {
  char msg[NAPI_CALL_MSG_MAX];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

// The same, with the error's `code` set to "E<errno>" (callers test the code, not the text).
static inline napi_value throw_errno_code(napi_env env, const char* what, int err) {
  char msg[NAPI_CALL_MSG_MAX];
  char code[32];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  snprintf(code, sizeof code, "E%d", err);
  napi_throw_error(env, code, msg);
  return NULL;
}

// Fetches up to `want` arguments into argv (missing ones are `undefined`); returns how many the
// caller passed.
static inline size_t get_args(napi_env env, napi_callback_info info, size_t want, napi_value* argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  return argc;
}

// Fetches exactly `want` arguments; fewer throw TypeError(usage) and return -1.
static inline int need_args(napi_env env, napi_callback_info info, size_t want, napi_value* argv,
                            const char* usage) {
  if (get_args(env, info, want, argv) < want) {
    napi_throw_type_error(env, NULL, usage);
    return -1;
  }
  return 0;
}

// One exported function, for an EXPORT_METHODS table.
#define NAPI_METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

// Defines every entry of the array `props` on `exports` and returns it (a module's Init body).
#define EXPORT_METHODS(env, exports, props)                                                      \
  (napi_define_properties((env), (exports), sizeof(props) / sizeof((props)[0]), (props)), (exports))

// A JS handle object owning `data` (freed through `finalize` when collected) with the references a
// poll callback needs: `cb` held strongly as *callback, the handle weakly as *self, and an async
// context named `resource` for async hooks.
static inline napi_value new_callback_handle(napi_env env, void* data, napi_finalize finalize, napi_value cb,
                                             const char* resource, napi_ref* callback, napi_ref* self,
                                             napi_async_context* async) {
  napi_value handle, resname;
  napi_create_object(env, &handle);
  napi_create_reference(env, cb, 1, callback);
  napi_create_reference(env, handle, 0, self);
  napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH, &resname);
  napi_async_init(env, handle, resname, async);
  napi_wrap(env, handle, data, finalize, NULL, NULL);
  return handle;
}

// Starts `poll` on `fd` for readability on this env's loop, with `data` as its data.
static inline void poll_readable(napi_env env, uv_poll_t* poll, int fd, void* data, uv_poll_cb on_readable) {
  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, poll, fd);
  poll->data = data;
  uv_poll_start(poll, UV_READABLE, on_readable);
}

// Defines `static type* unwrap(env, v)`: the object a handle wraps, or a thrown Error(closed_msg)
// and NULL once it is closed (every wrapped type has a `closed` flag).
#define DEFINE_UNWRAP(type, closed_msg)                                                           \
  static type* unwrap(napi_env env, napi_value v) {                                              \
    type* obj = NULL;                                                                            \
    if (napi_unwrap(env, v, (void**)&obj) != napi_ok || !obj || obj->closed) {                   \
      napi_throw_error(env, NULL, closed_msg);                                                   \
      return NULL;                                                                               \
    }                                                                                            \
    return obj;                                                                                  \
  }

// Calls the handle's callback with one argument from a libuv callback (the caller holds a handle
// scope). A throw in it is the process's uncaught exception, as for any event emitter; returns -1
// then, so the caller stops its batch.
static inline int call_back(napi_env env, napi_async_context async, napi_ref self, napi_ref callback,
                            napi_value arg) {
  napi_value cb, recv, result;
  napi_get_reference_value(env, callback, &cb);
  napi_get_reference_value(env, self, &recv);
  if (napi_make_callback(env, async, recv, cb, 1, &arg, &result) == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
    return -1;
  }
  return 0;
}

#endif
