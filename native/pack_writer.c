// Appending chunks to a pack file of the chunk store (src/cache/chunk-store.ts): their bytes, and
// nothing else; each one's CRC32C is taken here, on the way, for the store's entry (reads check
// it). Three ways to write:
// - direct (O_DIRECT), for bulk writes (an import, a replication): the bytes go to the disk
//   without passing through the page cache (copying them there costs more CPU than hashing them,
//   and the pages would only push out those of the VMs). O_DIRECT writes whole 4 KiB blocks from
//   4 KiB-aligned memory at 4 KiB-aligned offsets:
//   - from the caller's memory itself, when a run of at least ZERO_COPY_MIN bytes of chunks lies
//     back to back in a buffer this file allocated (alignedBuffer: the import reads the image
//     into such buffers). The run's aligned span goes to the next aligned offset of the pack,
//     whole: its chunks keep their places within their blocks, and the bytes around them in the
//     first and last block (up to 8 KiB a run) are dead space in the pack. No copy.
//   - otherwise through a staging buffer, packed back to back after the last partial block's
//     bytes, which are kept here and written again with the next append.
// - buffered: a plain pwritev at the end, for a few chunks at a time (the fetch path).
// All keep the last partial block's bytes, so they mix on one pack; the file is cut to the end of
// its last chunk when the pack is closed.
#define _GNU_SOURCE
#include "crc32c.h"
#include "napi_check.h"
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

/* 8 MiB a write: few enough I/Os, and a stage that stays in the CPU's last-level cache */
enum { BLOCK = 4096, HUGE = 2 << 20, MAX_CHUNKS = 2048, STAGE_BYTES = 8 << 20, ZERO_COPY_MIN = 256 << 10 };

/* The buffers alignedBuffer made and not yet freed: runs of chunks in them are written as they are. */
enum { MAX_ALIGNED = 64 };
static struct {
  uint8_t *base;
  size_t len;
} aligned[MAX_ALIGNED];
static pthread_mutex_t aligned_lock = PTHREAD_MUTEX_INITIALIZER;

/** Whether [from, to) lies inside one buffer of alignedBuffer's. */
static int in_aligned(const uint8_t *from, const uint8_t *to) {
  int yes = 0;
  pthread_mutex_lock(&aligned_lock);
  for (int i = 0; i < MAX_ALIGNED && !yes; i++)
    yes = aligned[i].base && from >= aligned[i].base && to <= aligned[i].base + aligned[i].len;
  pthread_mutex_unlock(&aligned_lock);
  return yes;
}

static void aligned_free(napi_env env, void *data, void *hint) {
  int64_t len = (int64_t)(uintptr_t)hint, left;
  pthread_mutex_lock(&aligned_lock);
  for (int i = 0; i < MAX_ALIGNED; i++)
    if (aligned[i].base == data) aligned[i].base = NULL;
  pthread_mutex_unlock(&aligned_lock);
  free(data);
  napi_adjust_external_memory(env, -len, &left);
}

/**
 * alignedBuffer(size) -> Buffer: size bytes (rounded up to whole blocks) in memory aligned to 2 MiB,
 * in huge pages where the kernel gives them: chunks read into it are written to a pack without a
 * copy (packAppend, direct).
 */
static napi_value AlignedBuffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int64_t want;
  CHECK(napi_get_value_int64(env, argv[0], &want));
  if (want <= 0 || want > ((int64_t)1 << 32)) return throw_errno(env, "alignedBuffer", EINVAL);
  size_t len = ((size_t)want + BLOCK - 1) & ~(size_t)(BLOCK - 1);
  uint8_t *p;
  if (posix_memalign((void **)&p, HUGE, len) != 0) return throw_errno(env, "alignedBuffer", ENOMEM);
  madvise(p, len, MADV_HUGEPAGE);
  napi_status st = napi_create_external_buffer(env, len, p, aligned_free, (void *)(uintptr_t)len, &out);
  if (st != napi_ok) {
    free(p);
    CHECK(st);
  }
  /* the garbage collector is told of the memory, so that buffers nobody holds are freed in time */
  int64_t total;
  napi_adjust_external_memory(env, (int64_t)len, &total);
  pthread_mutex_lock(&aligned_lock);
  for (int i = 0; i < MAX_ALIGNED; i++)
    if (!aligned[i].base) {
      aligned[i].base = p;
      aligned[i].len = len;
      break;
    }
  pthread_mutex_unlock(&aligned_lock);
  return out;
}

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
 * Direct: the chunks are laid out in the stage after the old partial block's bytes, each one's
 * CRC taken as it is copied, and written a stage at a time in whole blocks; the last, padded
 * block is written again by the next append.
 */
static int append_staged(pack_writer_t *w, uint8_t **data, size_t *lens, uint32_t n, const uint32_t *crcs,
                         double *places) {
  uint64_t base = w->size & ~(uint64_t)(BLOCK - 1);
  size_t at = (size_t)(w->size - base);
  int err = stage_grow(w, STAGE_BYTES, 0);
  if (err) return err;
  memcpy(w->stage, w->tail, at);
  for (uint32_t i = 0; i < n; i++) {
    size_t rec = lens[i];
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
    places[2 * i] = (double)(base + at);
    if (crcs) {
      memcpy(w->stage + at, data[i], lens[i]);
      places[2 * i + 1] = crcs[i];
    } else
      places[2 * i + 1] = vmifs_crc32c_copy(w->stage + at, data[i], lens[i]);
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

/**
 * Zero copy: chunks [0, n) lie back to back in a buffer of alignedBuffer's. Their aligned span is
 * written as it is at the pack's next aligned offset; the last partial block is kept for the next
 * append.
 */
static int append_in_place(pack_writer_t *w, uint8_t **data, size_t *lens, uint32_t n, const uint32_t *crcs,
                           double *places) {
  uint8_t *from = (uint8_t *)((uintptr_t)data[0] & ~(uintptr_t)(BLOCK - 1));
  uint8_t *end = data[n - 1] + lens[n - 1];
  uint8_t *to = (uint8_t *)(((uintptr_t)end + BLOCK - 1) & ~(uintptr_t)(BLOCK - 1));
  uint64_t at = (w->size + BLOCK - 1) & ~(uint64_t)(BLOCK - 1);
  int err = write_all(w->dfd, from, (size_t)(to - from), at);
  if (err) return err;
  for (uint32_t i = 0; i < n; i++) {
    places[2 * i] = (double)(at + (uint64_t)(data[i] - from));
    places[2 * i + 1] = crcs ? crcs[i] : vmifs_crc32c(data[i], lens[i]);
  }
  uint8_t *last = (uint8_t *)((uintptr_t)end & ~(uintptr_t)(BLOCK - 1));
  memcpy(w->tail, last, (size_t)(end - last));
  w->size = at + (uint64_t)(end - from);
  return 0;
}

/** Direct: runs long enough and in alignedBuffer's memory in place, the rest staged, in order. */
static int append_direct(pack_writer_t *w, uint8_t **data, size_t *lens, uint32_t n, const uint32_t *crcs,
                         double *places) {
  uint32_t done = 0, i = 0;
  while (i < n) {
    uint32_t j = i + 1;
    size_t run = lens[i];
    while (j < n && data[j] == data[j - 1] + lens[j - 1])
      run += lens[j++];
    if (run >= ZERO_COPY_MIN && in_aligned(data[i], data[j - 1] + lens[j - 1])) {
      int err = 0;
      if (i > done &&
          (err = append_staged(w, data + done, lens + done, i - done, crcs ? crcs + done : NULL, places + 2 * done)))
        return err;
      if ((err = append_in_place(w, data + i, lens + i, j - i, crcs ? crcs + i : NULL, places + 2 * i))) return err;
      done = j;
    }
    i = j;
  }
  return done < n ? append_staged(w, data + done, lens + done, n - done, crcs ? crcs + done : NULL, places + 2 * done)
                  : 0;
}

/** Buffered: one pwritev of the chunks as they are (a few at a time: the fetch path). */
static int append_buffered(pack_writer_t *w, uint8_t **data, size_t *lens, uint32_t n, const uint32_t *crcs,
                           double *places) {
  struct iovec iov[MAX_CHUNKS];
  uint64_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    places[2 * i] = (double)(w->size + total);
    places[2 * i + 1] = crcs ? crcs[i] : vmifs_crc32c(data[i], lens[i]);
    iov[i] = (struct iovec){data[i], lens[i]};
    total += lens[i];
  }
  uint32_t k = 0;
  uint64_t off = w->size;
  while (k < n) {
    ssize_t got = pwritev(w->fd, iov + k, (int)(n - k > 1024 ? 1024 : n - k), (off_t)off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return got < 0 ? -errno : -EIO;
    off += (uint64_t)got;
    while (k < n && (size_t)got >= iov[k].iov_len)
      got -= (ssize_t)iov[k++].iov_len;
    if (k < n && got > 0) {
      iov[k].iov_base = (uint8_t *)iov[k].iov_base + got;
      iov[k].iov_len -= (size_t)got;
    }
  }
  w->size += total;
  keep_tail(w, (void **)data, lens, n);
  return 0;
}

/**
 * packAppend(writer, chunks[], direct, crcs?) -> Float64Array: appends the chunks' bytes, in order,
 * and returns where each one went and its CRC32C: [offset, crc] a chunk. The bytes were verified.
 * crcs (a Uint32Array, one a chunk): their CRC32Cs, taken by the caller while the bytes were in
 * the CPU's caches (an import, just after hashing them); otherwise they are taken here.
 */
static napi_value PackAppend(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  pack_writer_t *w = writer_args(env, info, 4, argv);
  if (!w) return NULL;
  bool direct = false;
  napi_get_value_bool(env, argv[2], &direct);
  uint32_t n;
  CHECK(napi_get_array_length(env, argv[1], &n));
  if (n > MAX_CHUNKS) return throw_errno(env, "packAppend", E2BIG);
  napi_value ab, out;
  double *places;
  CHECK(napi_create_arraybuffer(env, (size_t)n * 16, (void **)&places, &ab));
  CHECK(napi_create_typedarray(env, napi_float64_array, 2 * (size_t)n, ab, 0, &out));
  if (n == 0) return out;
  const uint32_t *crcs = NULL;
  bool typed = false;
  napi_is_typedarray(env, argv[3], &typed);
  if (typed) {
    napi_typedarray_type type;
    size_t count;
    void *p;
    CHECK(napi_get_typedarray_info(env, argv[3], &type, &count, &p, NULL, NULL));
    if (type != napi_uint32_array || count != n) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "packAppend: crcs is a Uint32Array of one a chunk");
      return NULL;
    }
    crcs = p;
  }
  uint8_t *data[MAX_CHUNKS];
  size_t lens[MAX_CHUNKS];
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    CHECK(napi_get_element(env, argv[1], i, &b));
    CHECK(napi_get_buffer_info(env, b, (void **)&data[i], &lens[i]));
    if (lens[i] > UINT32_MAX) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "packAppend: a chunk is under 4 GiB");
      return NULL;
    }
  }
  int err = direct && w->dfd >= 0 ? append_direct(w, data, lens, n, crcs, places)
                                  : append_buffered(w, data, lens, n, crcs, places);
  if (err) return throw_errno(env, "pack write", -err);
  return out;
}

/**
 * packAppendRun(writer, piece, spill, offs, lens, flags, idx, direct, crcs) -> Float64Array: packAppend
 * for chunks of a chunker's run (src/manifests/chunker.ts): chunk idx[k] is lens[i] bytes at offs[i]
 * of the piece, or of the spill where flags[i] has CHUNK_SPILLED (2); crcs[k] is its CRC32C
 */
static napi_value PackAppendRun(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  pack_writer_t *w = writer_args(env, info, 9, argv);
  if (!w) return NULL;
  uint8_t *piece, *spill = NULL;
  size_t piece_len, spill_len = 0;
  CHECK(napi_get_buffer_info(env, argv[1], (void **)&piece, &piece_len));
  napi_valuetype st;
  CHECK(napi_typeof(env, argv[2], &st));
  if (st != napi_undefined) CHECK(napi_get_buffer_info(env, argv[2], (void **)&spill, &spill_len));
  napi_typedarray_type t[4];
  size_t cnt[4];
  void *p[4];
  for (int k = 0; k < 4; k++)
    CHECK(napi_get_typedarray_info(env, argv[k == 3 ? 8 : 3 + k], &t[k], &cnt[k], &p[k], NULL, NULL));
  bool direct = false;
  napi_get_value_bool(env, argv[7], &direct);
  if (t[0] != napi_float64_array || t[1] != napi_float64_array || t[2] != napi_uint8_array ||
      t[3] != napi_uint32_array || cnt[0] != cnt[2] || cnt[1] != cnt[2]) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "packAppendRun: offs, lens (Float64Array), flags, crcs");
    return NULL;
  }
  napi_typedarray_type ti;
  size_t n;
  void *ip;
  CHECK(napi_get_typedarray_info(env, argv[6], &ti, &n, &ip, NULL, NULL));
  if (ti != napi_uint32_array || cnt[3] != n) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "packAppendRun: idx and crcs are Uint32Arrays of one a chunk");
    return NULL;
  }
  if (n > MAX_CHUNKS) return throw_errno(env, "packAppendRun", E2BIG);
  const double *offs = p[0], *lens = p[1];
  const uint8_t *flags = p[2];
  const uint32_t *idx = ip;
  uint8_t *data[MAX_CHUNKS];
  size_t sizes[MAX_CHUNKS];
  for (size_t k = 0; k < n; k++) {
    uint32_t i = idx[k];
    int spilled = i < cnt[2] && (flags[i] & 2);
    uint8_t *base = spilled ? spill : piece;
    size_t blen = spilled ? spill_len : piece_len;
    if (i >= cnt[2] || !base || offs[i] < 0 || lens[i] < 0 || offs[i] + lens[i] > (double)blen) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "packAppendRun: a chunk outside its buffer");
      return NULL;
    }
    data[k] = base + (size_t)offs[i];
    sizes[k] = (size_t)lens[i];
  }
  napi_value ab, out;
  double *places;
  CHECK(napi_create_arraybuffer(env, n * 16, (void **)&places, &ab));
  CHECK(napi_create_typedarray(env, napi_float64_array, 2 * n, ab, 0, &out));
  if (n == 0) return out;
  int err = direct && w->dfd >= 0 ? append_direct(w, data, sizes, (uint32_t)n, p[3], places)
                                  : append_buffered(w, data, sizes, (uint32_t)n, p[3], places);
  if (err) return throw_errno(env, "pack write", -err);
  return out;
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
      {"packAppendRun", NULL, PackAppendRun, NULL, NULL, NULL, napi_default, NULL},
      {"alignedBuffer", NULL, AlignedBuffer, NULL, NULL, NULL, napi_default, NULL},
      {"packSync", NULL, PackSync, NULL, NULL, NULL, napi_default, NULL},
      {"packClose", NULL, PackClose, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
