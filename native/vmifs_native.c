// vmifs native hot loops (N-API, C99).
//   fastcdcCut(buf, start, end, minSize, normalSize, maxSize, maskS, maskL) -> absolute cut offset
//   setGear(Uint8Array(2048))  the 256 64-bit gear values (little endian), see manifests/SPEC.md
//   zeroBlocks(buf, blockSize) -> Uint8Array with 1 for every all-zero block of buf
//   gatherHashes(src, idx), distinctHashes(hashes, zero, offsets): hashes picked, and a manifest's distinct ones
// The gear loop is FastCDC with normalized chunking (Xia et al., 2016): below normalSize the
// stricter mask maskS applies, above it the looser maskL; the first minSize bytes are skipped.
#define _GNU_SOURCE
#include "bytes.h"
#include "chunker.h"
#include "crc32c.h"
#include "napi_check.h"
#include <blake3.h>
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static uint64_t GEAR[256];
static int gear_set = 0;

static uint64_t GEAR_LS[256]; /* GEAR[i] << 1 */

/* Two bytes per step (FastCDC 2020, "rolling two bytes"): h << 2 + GEAR_LS[a] is h-after-a
 * shifted left once, so the check after byte a tests it against mask << 1. Exact because the
 * masks never include bit 63 (see manifests/SPEC.md). */
#define STEP2(mask, mask_ls)          \
  h = (h << 2) + GEAR_LS[p[i]];       \
  if (!(h & (mask_ls))) return i + 1; \
  h += GEAR[p[i + 1]];                \
  if (!(h & (mask))) return i + 2;

static size_t cut(const uint8_t *p, size_t n, size_t minSize, size_t normalSize, size_t maxSize, uint64_t maskS,
                  uint64_t maskL) {
  if (n <= minSize) return n;
  if (n > maxSize) n = maxSize;
  size_t normal = normalSize < n ? normalSize : n;
  const uint64_t maskS_ls = maskS << 1, maskL_ls = maskL << 1;
  uint64_t h = 0;
  size_t i = minSize;
  for (; i + 1 < normal; i += 2) {
    STEP2(maskS, maskS_ls)
  }
  if (i < normal) {
    h = (h << 1) + GEAR[p[i]];
    if (!(h & maskS)) return i + 1;
    i++;
  }
  for (; i + 1 < n; i += 2) {
    STEP2(maskL, maskL_ls)
  }
  if (i < n) {
    h = (h << 1) + GEAR[p[i]];
    if (!(h & maskL)) return i + 1;
  }
  return n;
}

size_t vmifs_cdc_cut(const uint8_t *p, size_t n, size_t min, size_t avg, size_t max, uint64_t mask_s, uint64_t mask_l) {
  return cut(p, n, min, avg, max, mask_s, mask_l);
}

int vmifs_gear_ready(void) {
  return gear_set;
}

static int get_u64(napi_env env, napi_value v, uint64_t *out) {
  bool lossless;
  if (napi_get_value_bigint_uint64(env, v, out, &lossless) == napi_ok) return 1;
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  *out = (uint64_t)d;
  return 1;
}

static napi_value FastcdcCut(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) {
    napi_throw_type_error(env, "VMIFS_NATIVE", "fastcdcCut needs 8 arguments");
    return NULL;
  }
  if (!gear_set) {
    napi_throw_error(env, "VMIFS_NATIVE", "setGear was not called");
    return NULL;
  }
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  uint32_t start, end, minS, normS, maxS;
  uint64_t maskS, maskL;
  CHECK(napi_get_value_uint32(env, argv[1], &start));
  CHECK(napi_get_value_uint32(env, argv[2], &end));
  CHECK(napi_get_value_uint32(env, argv[3], &minS));
  CHECK(napi_get_value_uint32(env, argv[4], &normS));
  CHECK(napi_get_value_uint32(env, argv[5], &maxS));
  if (!get_u64(env, argv[6], &maskS) || !get_u64(env, argv[7], &maskL)) {
    napi_throw_type_error(env, "VMIFS_NATIVE", "masks must be bigint or number");
    return NULL;
  }
  if (end > len || start > end) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "range outside buffer");
    return NULL;
  }
  size_t c = cut((const uint8_t *)data + start, end - start, minS, normS, maxS, maskS, maskL);
  napi_value r;
  CHECK(napi_create_uint32(env, (uint32_t)(start + c), &r));
  return r;
}

static napi_value SetGear(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  if (len != 2048) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "gear table must be 2048 bytes");
    return NULL;
  }
  const uint8_t *b = data;
  for (int i = 0; i < 256; i++) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
      v = (v << 8) | b[i * 8 + k];
    GEAR[i] = v;
    GEAR_LS[i] = v << 1;
  }
  gear_set = 1;
  return NULL;
}

int vmifs_all_zero(const uint8_t *p, size_t n) {
  // word-at-a-time OR; blocks are 4 KiB-aligned in practice
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    memcpy(w, p + i, 64);
    acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
    if (acc) return 0;
  }
  for (; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

static napi_value ZeroBlocks(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  uint32_t bs;
  CHECK(napi_get_value_uint32(env, argv[1], &bs));
  if (bs == 0) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "block size 0");
    return NULL;
  }
  size_t nb = (len + bs - 1) / bs;
  napi_value ab, out;
  void *o;
  CHECK(napi_create_arraybuffer(env, nb, &o, &ab));
  CHECK(napi_create_typedarray(env, napi_uint8_array, nb, ab, 0, &out));
  uint8_t *ob = o;
  for (size_t k = 0; k < nb; k++) {
    size_t off = k * bs, n = len - off < bs ? len - off : bs;
    ob[k] = (uint8_t)vmifs_all_zero((const uint8_t *)data + off, n);
  }
  return out;
}

/** blake3(buf) -> Buffer: BLAKE3-256 of the buffer (src/util/hash.ts: every hash the project takes) */
static napi_value Blake3(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data, *dst;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  CHECK(napi_create_buffer(env, BLAKE3_OUT_LEN, &dst, &out));
  blake3_hasher h;
  blake3_hasher_init(&h);
  blake3_hasher_update(&h, data, len);
  blake3_hasher_finalize(&h, dst, BLAKE3_OUT_LEN);
  return out;
}

/** crc32c(buf) -> number: the checksum of a pack record's bytes (native/crc32c.h) */
static napi_value Crc32c(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[0], &data, &len));
  CHECK(napi_create_uint32(env, vmifs_crc32c(data, len), &out));
  return out;
}

/**
 * flock(fd, how) -> boolean: flock(2) on an open file; how 0 shared, 1 exclusive, 2 exclusive if no
 * one else holds it (false when someone does), 3 unlock
 */
static napi_value Flock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, how;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int32(env, argv[1], &how));
  static const int ops[] = {LOCK_SH, LOCK_EX, LOCK_EX | LOCK_NB, LOCK_UN};
  if (how < 0 || how > 3) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "flock: how is 0 to 3");
    return NULL;
  }
  int rc;
  do
    rc = flock(fd, ops[how]);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 && !(how == 2 && errno == EWOULDBLOCK)) return throw_errno(env, "flock", errno);
  CHECK(napi_get_boolean(env, rc == 0, &out));
  return out;
}

/**
 * punchHole(fd, offset, length): frees the file's blocks in the range (reads of it return zeros;
 * the size stays). Throws with the errno (EOPNOTSUPP where the filesystem cannot).
 */
static napi_value PunchHole(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  double off, len;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_double(env, argv[1], &off));
  CHECK(napi_get_value_double(env, argv[2], &len));
  if (len > 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) != 0)
    return throw_errno(env, "fallocate(PUNCH_HOLE)", errno);
  return NULL;
}

/**
 * sdNotify(socket, message) -> boolean: one datagram to the service manager's notification socket
 * ($NOTIFY_SOCKET: a path, or "@name" in the abstract namespace), as sd_notify(3) sends it.
 * Node has no datagram sockets of the Unix family, so it is sent here. False when it could not be.
 */
static napi_value SdNotify(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1], msg[4096];
  size_t plen, mlen;
  CHECK(napi_get_value_string_utf8(env, argv[0], path, sizeof path, &plen));
  CHECK(napi_get_value_string_utf8(env, argv[1], msg, sizeof msg, &mlen));
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  int ok = 0;
  if (plen > 0 && plen < sizeof addr.sun_path) {
    memcpy(addr.sun_path, path, plen);
    if (path[0] == '@') addr.sun_path[0] = 0;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      ok = sendto(fd, msg, mlen, MSG_NOSIGNAL, (struct sockaddr *)&addr, alen) == (ssize_t)mlen;
      close(fd);
    }
  }
  CHECK(napi_get_boolean(env, ok, &out));
  return out;
}

static int cmp_hash(const void *a, const void *b, void *base) {
  return memcmp((const uint8_t *)base + (size_t) * (const uint32_t *)a * 32,
                (const uint8_t *)base + (size_t) * (const uint32_t *)b * 32, 32);
}

void vmifs_order_by_hash(uint32_t *idx, size_t n, const uint8_t *hashes) {
  qsort_r(idx, n, sizeof *idx, cmp_hash, (void *)hashes);
}

/** gatherHashes(src, idx) -> Buffer: the 32-byte hashes src[idx[k]], one after the other */
static napi_value GatherHashes(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *src, *dst;
  size_t len, n;
  CHECK(napi_get_buffer_info(env, argv[0], (void **)&src, &len));
  napi_typedarray_type t;
  void *ip;
  CHECK(napi_get_typedarray_info(env, argv[1], &t, &n, &ip, NULL, NULL));
  if (t != napi_uint32_array) {
    napi_throw_type_error(env, "VMIFS_NATIVE", "gatherHashes: idx is a Uint32Array");
    return NULL;
  }
  const uint32_t *idx = ip;
  for (size_t k = 0; k < n; k++)
    if ((size_t)idx[k] * 32 + 32 > len) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "gatherHashes: an index past the hashes");
      return NULL;
    }
  CHECK(napi_create_buffer(env, n * 32, (void **)&dst, &out));
  for (size_t k = 0; k < n; k++)
    memcpy(dst + 32 * k, src + 32 * (size_t)idx[k], 32);
  return out;
}

/**
 * distinctHashes(hashes, zero, offsets) -> [Buffer, Float64Array]: a manifest's distinct data chunks
 * in the order of their bytes (entries where zero is 1 are not chunks), and each one's size
 * (offsets[i + 1] - offsets[i])
 */
static napi_value DistinctHashes(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out, hb, ab, sa;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *h;
  size_t len, nz, no;
  CHECK(napi_get_buffer_info(env, argv[0], (void **)&h, &len));
  napi_typedarray_type tz, to;
  void *zp, *op;
  CHECK(napi_get_typedarray_info(env, argv[1], &tz, &nz, &zp, NULL, NULL));
  CHECK(napi_get_typedarray_info(env, argv[2], &to, &no, &op, NULL, NULL));
  size_t n = len / 32;
  if (len % 32 || tz != napi_uint8_array || to != napi_float64_array || nz < n || no < n + 1) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "distinctHashes: hashes, zero flags and offsets of one manifest");
    return NULL;
  }
  const uint8_t *zero = zp;
  const double *offs = op;
  uint32_t *idx = malloc((n ? n : 1) * sizeof *idx);
  if (!idx) return throw_errno(env, "distinctHashes", ENOMEM);
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (!zero[i]) idx[m++] = (uint32_t)i;
  vmifs_order_by_hash(idx, m, h);
  size_t d = 0;
  for (size_t k = 0; k < m; k++)
    if (d == 0 || memcmp(h + 32 * (size_t)idx[k], h + 32 * (size_t)idx[d - 1], 32) != 0) idx[d++] = idx[k];
  uint8_t *dst;
  double *sizes;
  napi_status st = napi_create_buffer(env, d * 32, (void **)&dst, &hb);
  if (st == napi_ok) st = napi_create_arraybuffer(env, d * 8, (void **)&sizes, &ab);
  if (st == napi_ok) st = napi_create_typedarray(env, napi_float64_array, d, ab, 0, &sa);
  if (st != napi_ok) {
    free(idx);
    napi_throw_error(env, "VMIFS_NATIVE", "distinctHashes: out of memory");
    return NULL;
  }
  for (size_t k = 0; k < d; k++) {
    memcpy(dst + 32 * k, h + 32 * (size_t)idx[k], 32);
    sizes[k] = offs[idx[k] + 1] - offs[idx[k]];
  }
  free(idx);
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_set_element(env, out, 0, hb));
  CHECK(napi_set_element(env, out, 1, sa));
  return out;
}

void vmifs_fuse_register(napi_env env, napi_value exports);
void vmifs_pack_register(napi_env env, napi_value exports);
void vmifs_chunker_register(napi_env env, napi_value exports);
void vmifs_index_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"fastcdcCut", NULL, FastcdcCut, NULL, NULL, NULL, napi_default, NULL},
      {"setGear", NULL, SetGear, NULL, NULL, NULL, napi_default, NULL},
      {"zeroBlocks", NULL, ZeroBlocks, NULL, NULL, NULL, napi_default, NULL},
      {"blake3", NULL, Blake3, NULL, NULL, NULL, napi_default, NULL},
      {"crc32c", NULL, Crc32c, NULL, NULL, NULL, napi_default, NULL},
      {"gatherHashes", NULL, GatherHashes, NULL, NULL, NULL, napi_default, NULL},
      {"distinctHashes", NULL, DistinctHashes, NULL, NULL, NULL, napi_default, NULL},
      {"punchHole", NULL, PunchHole, NULL, NULL, NULL, napi_default, NULL},
      {"flock", NULL, Flock, NULL, NULL, NULL, napi_default, NULL},
      {"sdNotify", NULL, SdNotify, NULL, NULL, NULL, napi_default, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  vmifs_fuse_register(env, exports);
  vmifs_pack_register(env, exports);
  vmifs_chunker_register(env, exports);
  vmifs_index_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
