// The addon's ways to call N-API and to fail: a call that fails throws VMIFS_NATIVE and the
// function returns; a system call that fails throws an Error named by its errno (throw_errno).
#ifndef VMIFS_NAPI_CHECK_H
#define VMIFS_NAPI_CHECK_H
#include <node_api.h>
#include <stdio.h>
#include <string.h>

#define CHECK(call)                                           \
  do {                                                        \
    if ((call) != napi_ok) {                                  \
      napi_throw_error(env, "VMIFS_NATIVE", #call " failed"); \
      return NULL;                                            \
    }                                                         \
  } while (0)

/**
 * Throws an Error for a failed system call: its code the errno's name (ENOSPC, as Node's own
 * errors have it), its errno the number, its message "<what>: <strerror>". Returns NULL.
 * (strerrorname_np: the including file defines _GNU_SOURCE.)
 */
static inline napi_value throw_errno(napi_env env, const char *what, int err) {
  const char *name = strerrorname_np(err);
  char msg[4096 + 128];
  snprintf(msg, sizeof msg, "%.4096s: %s", what, strerror(err));
  napi_value code, message, error, num;
  napi_create_string_utf8(env, name ? name : "EIO", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
  return NULL;
}

#endif
