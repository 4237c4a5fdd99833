// Appending records to a pack file of the chunk store (src/cache/chunk-store.ts): each a 40-byte
// header (magic, length, the CRC32C of the bytes, the hash's first 28 bytes) and the chunk's
// bytes, laid out here so that no caller builds headers or copies chunks. Two ways to write:
// - direct (O_DIRECT): the bytes go from an aligned staging buffer to the disk without passing
//   through the page cache. For bulk writes (an import, a replication): copying into the page
//   cache costs more CPU than hashing here, and the pages would only push out those of the VMs.
//   O_DIRECT writes whole 4 KiB blocks, so the last, partial block is kept here and written again
//   with the next append; the file is cut to its real size when the pack is closed.
// - buffered: a plain pwritev at the end, for a few chunks at a time (the fetch path).
// Both keep the last partial block's bytes, so they mix on one pack.
#define _GNU_SOURCE
#include "crc32c.h"
#include "napi_check.h"
#include "record.h"
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

/* 8 MiB a write: few enough I/Os, and a stage that stays in the CPU's last-level cache */
enum { BLOCK = 4096, HUGE = 2 << 20, MAX_RECORDS = 2048, STAGE_BYTES = 8 << 20 };

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

/** Makes room for `need` bytes in the stage, keeping its first `keep`. */
static int stage_grow(pack_writer_t *w, size_t need, size_t keep) {
  if (need <= w->stage_cap) return 0;
  size_t cap = (need + BLOCK - 1) & ~(size_t)(BLOCK - 1);
  if (cap < STAGE_BYTES) cap = STAGE_BYTES;
  uint8_t *next;
  /* in huge pages where the kernel gives them: each direct write pins the stage's pages */
  if (posix_memalign((void **)&next, HUGE, cap) != 0) return -ENOMEM;
  madvise(next, cap, MADV_HUGEPAGE);
  if (keep) memcpy(next, w->stage, keep);
  free(w->stage);
  w->stage = next;
  w->stage_cap = cap;
  return 0;
}

/**
 * Direct: the records are laid out in the stage after the old partial block's bytes, each chunk's
 * CRC taken as it is copied, and written a stage at a time in whole blocks; the last, padded
 * block is written again by the next append.
 */
static int append_direct(pack_writer_t *w, uint8_t **hashes, uint8_t **data, size_t *lens, uint32_t n) {
  uint64_t base = w->size & ~(uint64_t)(BLOCK - 1);
  size_t at = (size_t)(w->size - base);
  int err = stage_grow(w, STAGE_BYTES, 0);
  if (err) return err;
  memcpy(w->stage, w->tail, at);
  for (uint32_t i = 0; i < n; i++) {
    size_t rec = RECORD_HEADER + lens[i];
    if (at + rec > w->stage_cap) {
      size_t whole = at & ~(size_t)(BLOCK - 1);
      if (whole > 0) {
        if ((err = write_all(w->dfd, w->stage, whole, base))) return err;
        base += whole;
        memmove(w->stage, w->stage + whole, at - whole);
        at -= whole;
      }
      if ((err = stage_grow(w, at + rec, at))) return err;
    }
    uint32_t crc = vmifs_crc32c_copy(w->stage + at + RECORD_HEADER, data[i], lens[i]);
    record_put_header(w->stage + at, hashes[i], (uint32_t)lens[i], crc);
    at += rec;
  }
  size_t span = (at + BLOCK - 1) & ~(size_t)(BLOCK - 1);
  memset(w->stage + at, 0, span - at);
  if ((err = write_all(w->dfd, w->stage, span, base))) return err;
  size_t whole = at & ~(size_t)(BLOCK - 1);
  memcpy(w->tail, w->stage + whole, at - whole);
  w->size = base + at;
  return 0;
}

/** Buffered: one pwritev of headers and chunks, as they are (a few chunks at a time: the fetch path). */
static int append_buffered(pack_writer_t *w, uint8_t **hashes, uint8_t **data, size_t *lens, uint32_t n) {
  uint8_t *headers = malloc((size_t)n * RECORD_HEADER);
  if (!headers) return -ENOMEM;
  struct iovec iov[2 * MAX_RECORDS];
  void *bufs[2 * MAX_RECORDS];
  size_t blens[2 * MAX_RECORDS];
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint8_t *h = headers + (size_t)i * RECORD_HEADER;
    record_put_header(h, hashes[i], (uint32_t)lens[i], vmifs_crc32c(data[i], lens[i]));
    /* bufs, blens: the pieces as they are, for keep_tail (a short write moves iov on) */
    bufs[2 * i] = h;
    blens[2 * i] = RECORD_HEADER;
    bufs[2 * i + 1] = data[i];
    blens[2 * i + 1] = lens[i];
    iov[2 * i] = (struct iovec){h, RECORD_HEADER};
    iov[2 * i + 1] = (struct iovec){data[i], lens[i]};
    total += RECORD_HEADER + lens[i];
  }
  uint32_t m = 2 * n, k = 0;
  uint64_t off = w->size;
  int err = 0;
  while (k < m && !err) {
    ssize_t got = pwritev(w->fd, iov + k, (int)(m - k > 1024 ? 1024 : m - k), (off_t)off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      err = got < 0 ? -errno : -EIO;
      break;
    }
    off += (uint64_t)got;
    while (k < m && (size_t)got >= iov[k].iov_len)
      got -= (ssize_t)iov[k++].iov_len;
    if (k < m && got > 0) {
      iov[k].iov_base = (uint8_t *)iov[k].iov_base + got;
      iov[k].iov_len -= (size_t)got;
    }
  }
  if (!err) {
    w->size += total;
    keep_tail(w, bufs, blens, m);
  }
  free(headers);
  return err;
}

/**
 * packAppendRecords(writer, hashes[], chunks[], direct): appends a record for each chunk (its
 * header, then its bytes), in order. Hashes are 32 bytes; the chunks' bytes were verified.
 */
static napi_value PackAppendRecords(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  pack_writer_t *w = writer_args(env, info, 4, argv);
  if (!w) return NULL;
  bool direct = false;
  napi_get_value_bool(env, argv[3], &direct);
  uint32_t n, nh;
  CHECK(napi_get_array_length(env, argv[1], &nh));
  CHECK(napi_get_array_length(env, argv[2], &n));
  if (nh != n) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "packAppendRecords: as many hashes as chunks");
    return NULL;
  }
  if (n > MAX_RECORDS) return throw_errno(env, "packAppendRecords", E2BIG);
  if (n == 0) return NULL;
  uint8_t *hashes[MAX_RECORDS], *data[MAX_RECORDS];
  size_t lens[MAX_RECORDS];
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    size_t hl;
    CHECK(napi_get_element(env, argv[1], i, &b));
    CHECK(napi_get_buffer_info(env, b, (void **)&hashes[i], &hl));
    CHECK(napi_get_element(env, argv[2], i, &b));
    CHECK(napi_get_buffer_info(env, b, (void **)&data[i], &lens[i]));
    if (hl != 32 || lens[i] > UINT32_MAX) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "packAppendRecords: a hash is 32 bytes, a chunk under 4 GiB");
      return NULL;
    }
  }
  int err = direct && w->dfd >= 0 ? append_direct(w, hashes, data, lens, n) : append_buffered(w, hashes, data, lens, n);
  if (err) return throw_errno(env, "pack write", -err);
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
      {"packAppendRecords", NULL, PackAppendRecords, NULL, NULL, NULL, napi_default, NULL},
      {"packSync", NULL, PackSync, NULL, NULL, NULL, napi_default, NULL},
      {"packClose", NULL, PackClose, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
