// The addon's one way to call N-API: a call that fails throws VMIFS_NATIVE and the function returns.
#ifndef VMIFS_NAPI_CHECK_H
#define VMIFS_NAPI_CHECK_H
#include <node_api.h>

#define CHECK(call)                                           \
  do {                                                        \
    if ((call) != napi_ok) {                                  \
      napi_throw_error(env, "VMIFS_NATIVE", #call " failed"); \
      return NULL;                                            \
    }                                                         \
  } while (0)

#endif
