// Appending to a pack file of the chunk store (src/cache/chunk-store.ts). Two ways to write:
// - direct (O_DIRECT): the bytes go from an aligned staging buffer to the disk without passing
//   through the page cache. For bulk writes (an import, a replication): copying into the page
//   cache costs more CPU than hashing here, and the pages would only push out those of the VMs.
//   O_DIRECT writes whole 4 KiB blocks, so the last, partial block is kept here and written again
//   with the next append; the file is cut to its real size when the pack is closed.
// - buffered: a plain pwritev at the end, for a few chunks at a time (the fetch path).
// Both keep the last partial block's bytes, so they mix on one pack.
#define _GNU_SOURCE
#include "napi_check.h"
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

enum { BLOCK = 4096, MAX_BUFS = 4096 };

typedef struct {
  int fd;        /* buffered */
  int dfd;       /* O_DIRECT; -1 where the filesystem refuses it (then every write is buffered) */
  uint64_t size; /* bytes appended */
  uint8_t *tail; /* the bytes of the last, partial block: [size & ~(BLOCK - 1), size) */
  uint8_t *stage;
  size_t stage_cap;
} pack_writer_t;

/** The call's first n arguments into argv, and the writer it names first; NULL with an exception pending. */
static pack_writer_t *writer_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  pack_writer_t *w = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok ||
      napi_get_value_external(env, argv[0], (void **)&w) != napi_ok || !w || w->fd < 0) {
    napi_throw_type_error(env, "VMIFS_NATIVE", "not an open pack writer");
    return NULL;
  }
  return w;
}

/** packCreate(path) -> writer: a new, empty pack file (fails if it exists) */
static napi_value PackCreate(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  size_t len;
  CHECK(napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len));
  pack_writer_t *w = calloc(1, sizeof *w);
  if (!w || posix_memalign((void **)&w->tail, BLOCK, BLOCK) != 0) {
    free(w);
    return throw_errno(env, "packCreate", ENOMEM);
  }
  w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (w->fd < 0) {
    int e = errno;
    free(w->tail);
    free(w);
    return throw_errno(env, path, e);
  }
  w->dfd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
  CHECK(napi_create_external(env, w, NULL, NULL, &out));
  return out;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t k = pwrite(fd, p, n, (off_t)off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return k < 0 ? -errno : -EIO;
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

/** Keeps the bytes of the new last partial block (the appended buffers end it, or the old tail does). */
static void keep_tail(pack_writer_t *w, void **data, size_t *lens, uint32_t n) {
  uint64_t base = w->size & ~(uint64_t)(BLOCK - 1);
  uint8_t next[BLOCK];
  /* walk back from the end, filling [base, size) */
  uint64_t at = w->size;
  for (uint32_t i = n; i-- > 0 && at > base;) {
    uint64_t start = at - lens[i];
    uint64_t from = start > base ? start : base;
    memcpy(next + (from - base), (uint8_t *)data[i] + (from - start), (size_t)(at - from));
    at = start;
  }
  if (at > base) memcpy(next, w->tail, (size_t)(at - base)); /* the old tail's head, same block */
  memcpy(w->tail, next, (size_t)(w->size - base));
}

/** packAppend(writer, buffers[], direct): appends the buffers at the end, in order */
static napi_value PackAppend(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  pack_writer_t *w = writer_args(env, info, 3, argv);
  if (!w) return NULL;
  bool direct = false;
  napi_get_value_bool(env, argv[2], &direct);
  uint32_t n;
  CHECK(napi_get_array_length(env, argv[1], &n));
  if (n > MAX_BUFS) return throw_errno(env, "packAppend", E2BIG);
  void *data[MAX_BUFS];
  size_t lens[MAX_BUFS], total = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    CHECK(napi_get_element(env, argv[1], i, &b));
    CHECK(napi_get_buffer_info(env, b, &data[i], &lens[i]));
    total += lens[i];
  }
  if (total == 0) return NULL;
  uint64_t old = w->size;
  int err = 0;
  if (direct && w->dfd >= 0) {
    /* [block start of the old tail, end rounded up to a block): the old tail's bytes, then the new ones */
    uint64_t base = old & ~(uint64_t)(BLOCK - 1);
    size_t head = (size_t)(old - base);
    size_t span = (head + total + BLOCK - 1) & ~(size_t)(BLOCK - 1);
    if (span > w->stage_cap) {
      free(w->stage);
      w->stage = NULL;
      w->stage_cap = 0;
      if (posix_memalign((void **)&w->stage, BLOCK, span) != 0) return throw_errno(env, "packAppend", ENOMEM);
      w->stage_cap = span;
    }
    memcpy(w->stage, w->tail, head);
    size_t at = head;
    for (uint32_t i = 0; i < n; i++) {
      memcpy(w->stage + at, data[i], lens[i]);
      at += lens[i];
    }
    memset(w->stage + at, 0, span - at);
    err = write_all(w->dfd, w->stage, span, base);
  } else {
    struct iovec iov[MAX_BUFS];
    for (uint32_t i = 0; i < n; i++)
      iov[i] = (struct iovec){data[i], lens[i]};
    uint64_t off = old;
    uint32_t k = 0;
    while (k < n && !err) {
      ssize_t got = pwritev(w->fd, iov + k, (int)(n - k > 1024 ? 1024 : n - k), (off_t)off);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        err = got < 0 ? -errno : -EIO;
        break;
      }
      off += (uint64_t)got;
      while (k < n && (size_t)got >= iov[k].iov_len)
        got -= (ssize_t)iov[k++].iov_len;
      if (k < n && got > 0) {
        iov[k].iov_base = (uint8_t *)iov[k].iov_base + got;
        iov[k].iov_len -= (size_t)got;
      }
    }
  }
  if (err) return throw_errno(env, "pack write", -err);
  w->size = old + total;
  keep_tail(w, data, lens, n);
  return NULL;
}

/** packSync(writer): what was appended is on disk */
static napi_value PackSync(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  pack_writer_t *w = writer_args(env, info, 1, argv);
  if (!w) return NULL;
  if (fdatasync(w->fd) != 0) return throw_errno(env, "fdatasync", errno);
  return NULL;
}

/** packClose(writer): cuts the file to what was appended (direct writes pad the last block), syncs, closes */
static napi_value PackClose(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  pack_writer_t *w = writer_args(env, info, 1, argv);
  if (!w) return NULL;
  int err = 0;
  if (ftruncate(w->fd, (off_t)w->size) != 0 || fdatasync(w->fd) != 0) err = errno;
  close(w->fd);
  if (w->dfd >= 0) close(w->dfd);
  w->fd = w->dfd = -1;
  free(w->stage);
  free(w->tail);
  w->stage = w->tail = NULL;
  if (err) return throw_errno(env, "packClose", err);
  return NULL;
}

void vmifs_pack_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"packCreate", NULL, PackCreate, NULL, NULL, NULL, napi_default, NULL},
      {"packAppend", NULL, PackAppend, NULL, NULL, NULL, napi_default, NULL},
      {"packSync", NULL, PackSync, NULL, NULL, NULL, napi_default, NULL},
      {"packClose", NULL, PackClose, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
