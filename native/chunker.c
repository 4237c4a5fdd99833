// The import's pass over an image (src/manifests/chunker.ts): cut into chunks (fixed size, or
// FastCDC between zero runs and forced cuts), zero runs found on aligned 4 KiB blocks, every data
// chunk hashed with BLAKE3 and, when asked, told apart from those seen before in the same image
// and given its CRC32C. One call a piece the image is read in, not one a chunk: what it returns
// are arrays, a slot a chunk.
//
// The chunks are those of manifests/SPEC.md, whatever the pieces' sizes. In words: the image is
// cut into runs at every zero run of at least zmin bytes (a zero entry) and at every forced cut
// after data; a shorter zero run is data of its run. Each run is cut by FastCDC from its start,
// a chunk at a time (a cut looks at most max bytes ahead). Fixed chunking cuts at multiples of
// the chunk size; a chunk whose bytes are all zero is a zero entry.
//
// A data chunk that lies whole in the piece is given as its offset in the piece. One that does
// not (it starts in an earlier piece, or holds the zeros of a short zero run that began there)
// is copied into a buffer of its own, the call's spill.
//   chunkerNew(kind, a, b, c, maskS, maskL, zmin, cuts, opts) -> handle
//     kind 0: fixed, a = chunk size; kind 1: cdc, a/b/c = min/avg/max, masks as bigint.
//     cuts: Float64Array of image offsets (multiples of 4 KiB, sorted) where a run must end.
//     opts: bit 1 = tell new chunks apart (FRESH), bit 2 = CRC32C of each new chunk.
//   chunkerPush(handle, buf, final) -> { n, lengths, offs, flags, hashes, crcs, spill }
#define _GNU_SOURCE
#include "chunker.h"
#include "bytes.h"
#include "crc32c.h"
#include "napi_check.h"
#include <blake3.h>
#include <errno.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BLOCK = 4096, F_ZERO = 1, F_SPILLED = 2, F_FRESH = 4, OPT_DEDUP = 1, OPT_CRC = 2 };

/* The 32-byte hashes seen so far: open addressing on the first 8 bytes, at most half full. */
typedef struct {
  uint8_t *keys; /* cap * 32 */
  uint8_t *used; /* cap */
  size_t cap, n;
} hash_set;

static int set_add(hash_set *s, const uint8_t *h) {
  if (2 * (s->n + 1) > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 4096;
    uint8_t *keys = malloc(cap * 32), *used = calloc(cap, 1);
    if (!keys || !used) {
      free(keys);
      free(used);
      return -1;
    }
    for (size_t i = 0; i < s->cap; i++)
      if (s->used[i]) {
        uint64_t k;
        memcpy(&k, s->keys + i * 32, 8);
        size_t j = (size_t)k & (cap - 1);
        while (used[j])
          j = (j + 1) & (cap - 1);
        used[j] = 1;
        memcpy(keys + j * 32, s->keys + i * 32, 32);
      }
    free(s->keys);
    free(s->used);
    s->keys = keys;
    s->used = used;
    s->cap = cap;
  }
  uint64_t k;
  memcpy(&k, h, 8);
  size_t j = (size_t)k & (s->cap - 1);
  while (s->used[j]) {
    if (memcmp(s->keys + j * 32, h, 32) == 0) return 0;
    j = (j + 1) & (s->cap - 1);
  }
  s->used[j] = 1;
  memcpy(s->keys + j * 32, h, 32);
  s->n++;
  return 1;
}

typedef struct {
  int kind, opts, failed;
  size_t size;             /* fixed */
  size_t min, avg, max;    /* cdc */
  uint64_t mask_s, mask_l; /* cdc */
  size_t zmin;
  double *cuts;
  size_t ncuts, next_cut;
  uint64_t base; /* image offset of the next byte to classify */
  uint8_t tail[BLOCK];
  size_t tail_len;
  /* the run's bytes not cut yet: in the piece (pend_in_buf) or in own (capacity 2 * max) */
  const uint8_t *pend;
  size_t pend_len;
  int pend_in_buf;
  uint8_t *own;
  size_t zero_len;        /* a zero run not decided yet, right after the pending bytes */
  const uint8_t *zero_at; /* where its bytes are in the piece, if they all are */
  const uint8_t *zeros;   /* zmin zero bytes */
  const uint8_t *piece;   /* the piece of this call */
  size_t piece_len;
  bytes lengths, offs, flags, hashes, crcs, spill; /* this call's chunks */
  hash_set seen;
} chunker;

static void chunker_free(chunker *c) {
  free(c->cuts);
  free(c->own);
  free((void *)c->zeros);
  free(c->lengths.p);
  free(c->offs.p);
  free(c->flags.p);
  free(c->hashes.p);
  free(c->crcs.p);
  free(c->spill.p);
  free(c->seen.keys);
  free(c->seen.used);
  free(c);
}

static int in_piece(const chunker *c, const uint8_t *p, size_t n) {
  return p >= c->piece && p + n <= c->piece + c->piece_len;
}

static void emit(chunker *c, const uint8_t *p, size_t n, int zero) {
  if (room(&c->lengths, 8) || room(&c->offs, 8) || room(&c->flags, 1) || room(&c->hashes, 32) || room(&c->crcs, 4)) {
    c->failed = 1;
    return;
  }
  double len = (double)n, off = 0;
  uint8_t flag = 0;
  uint8_t *h = c->hashes.p + c->hashes.len;
  uint32_t crc = 0;
  if (zero) {
    flag = F_ZERO;
    memset(h, 0, 32);
  } else {
    blake3_hasher b;
    blake3_hasher_init(&b);
    blake3_hasher_update(&b, p, n);
    blake3_hasher_finalize(&b, h, 32);
    int fresh = 1;
    if (c->opts & OPT_DEDUP) {
      fresh = set_add(&c->seen, h);
      if (fresh < 0) {
        c->failed = 1;
        return;
      }
      if (fresh) flag |= F_FRESH;
    }
    if (fresh && (c->opts & OPT_CRC)) crc = vmifs_crc32c(p, n);
    if (in_piece(c, p, n)) {
      off = (double)(p - c->piece);
    } else {
      if (room(&c->spill, n)) {
        c->failed = 1;
        return;
      }
      off = (double)c->spill.len;
      memcpy(c->spill.p + c->spill.len, p, n);
      c->spill.len += n;
      flag |= F_SPILLED;
    }
  }
  memcpy(c->lengths.p + c->lengths.len, &len, 8);
  memcpy(c->offs.p + c->offs.len, &off, 8);
  c->flags.p[c->flags.len] = flag;
  memcpy(c->crcs.p + c->crcs.len, &crc, 4);
  c->lengths.len += 8;
  c->offs.len += 8;
  c->flags.len += 1;
  c->hashes.len += 32;
  c->crcs.len += 4;
}

/* Cuts the chunks of the pending bytes whose ends are decided (all of them when the run ends). */
static void cut_decided(chunker *c, int run_ends) {
  size_t s = 0;
  while (s < c->pend_len) {
    size_t avail = c->pend_len - s;
    size_t n = vmifs_cdc_cut(c->pend + s, avail, c->min, c->avg, c->max, c->mask_s, c->mask_l);
    if (n == avail && avail < c->max && !run_ends) break;
    emit(c, c->pend + s, n, 0);
    s += n;
  }
  if (s == 0) return;
  c->pend_len -= s;
  if (c->pend_in_buf) {
    c->pend += s;
  } else {
    memmove(c->own, c->own + s, c->pend_len);
    c->pend = c->own;
  }
}

/* n bytes of the run follow the pending ones (at p: in the piece, or memory of the call's own). */
static void feed(chunker *c, const uint8_t *p, size_t n) {
  int inbuf = in_piece(c, p, n);
  while (n > 0 && !c->failed) {
    if (c->pend_len == 0 && inbuf) {
      c->pend = p;
      c->pend_in_buf = 1;
      c->pend_len = n;
      n = 0;
    } else if (c->pend_in_buf && inbuf && c->pend + c->pend_len == p) {
      c->pend_len += n;
      n = 0;
    } else {
      /* into own: the pending bytes (fewer than max once cut) and at most max of these */
      if (c->pend_in_buf) {
        memmove(c->own, c->pend, c->pend_len);
        c->pend_in_buf = 0;
      }
      c->pend = c->own;
      size_t old = c->pend_len, take = n < c->max ? n : c->max;
      memcpy(c->own + old, p, take);
      c->pend_len += take;
      size_t before = c->pend_len;
      cut_decided(c, 0);
      size_t cut = before - c->pend_len;
      if (inbuf && cut >= old) {
        /* what is left pending lies in the piece: go on from there without copying */
        c->pend = p + (cut - old);
        c->pend_in_buf = 1;
      }
      p += take;
      n -= take;
      continue;
    }
    cut_decided(c, 0);
  }
}

/* A data block follows, or the image ends: the pending zero run ends a run, or is data of it. */
static void end_zero_run(chunker *c) {
  if (c->zero_len == 0) return;
  if (c->zero_len >= c->zmin) {
    cut_decided(c, 1);
    emit(c, NULL, c->zero_len, 1);
  } else {
    feed(c, c->zero_at ? c->zero_at : c->zeros, c->zero_len);
  }
  c->zero_len = 0;
  c->zero_at = NULL;
}

/* Blocks of the image from c->base on, n bytes at p (whole blocks but at the image's end). */
static void classify(chunker *c, const uint8_t *p, size_t n) {
  size_t nb = (n + BLOCK - 1) / BLOCK;
  while (c->next_cut < c->ncuts && c->cuts[c->next_cut] <= (double)c->base)
    c->next_cut++;
  size_t k = 0;
  while (k < nb && !c->failed) {
    size_t a = k * BLOCK;
    int zero = vmifs_all_zero(p + a, (a + BLOCK < n ? a + BLOCK : n) - a);
    size_t cut_at = c->next_cut < c->ncuts ? (size_t)((c->cuts[c->next_cut] - (double)c->base) / BLOCK) : SIZE_MAX;
    size_t j = k + 1;
    while (j < nb && j != cut_at) {
      size_t o = j * BLOCK;
      if (vmifs_all_zero(p + o, (o + BLOCK < n ? o + BLOCK : n) - o) != zero) break;
      j++;
    }
    size_t b = j * BLOCK < n ? j * BLOCK : n;
    if (zero) {
      if (c->zero_len == 0)
        c->zero_at = in_piece(c, p + a, b - a) ? p + a : NULL;
      else if (c->zero_at && c->zero_at + c->zero_len != p + a)
        c->zero_at = NULL;
      c->zero_len += b - a;
    } else {
      end_zero_run(c);
      feed(c, p + a, b - a);
    }
    if (j == cut_at) {
      c->next_cut++;
      /* a forced cut after data ends the run; after zeros a long run cuts anyway */
      if (!zero) cut_decided(c, 1);
    }
    k = j;
  }
  c->base += n;
}

static void fixed_chunk(chunker *c, const uint8_t *p, size_t n) {
  emit(c, p, n, vmifs_all_zero(p, n));
}

static void push_fixed(chunker *c, const uint8_t *p, size_t n, int final) {
  if (c->pend_len > 0) {
    size_t take = c->size - c->pend_len < n ? c->size - c->pend_len : n;
    memcpy(c->own + c->pend_len, p, take);
    c->pend_len += take;
    p += take;
    n -= take;
    if (c->pend_len == c->size) {
      fixed_chunk(c, c->own, c->pend_len);
      c->pend_len = 0;
    }
  }
  for (; n >= c->size; p += c->size, n -= c->size)
    fixed_chunk(c, p, c->size);
  if (n > 0) {
    memcpy(c->own, p, n);
    c->pend_len = n;
  }
  if (final && c->pend_len > 0) {
    fixed_chunk(c, c->own, c->pend_len);
    c->pend_len = 0;
  }
}

static void push_cdc(chunker *c, const uint8_t *p, size_t n, int final) {
  if (c->tail_len > 0) {
    size_t take = BLOCK - c->tail_len < n ? BLOCK - c->tail_len : n;
    memcpy(c->tail + c->tail_len, p, take);
    c->tail_len += take;
    p += take;
    n -= take;
    if (c->tail_len == BLOCK) {
      classify(c, c->tail, BLOCK);
      c->tail_len = 0;
    }
  }
  size_t whole = n / BLOCK * BLOCK;
  if (whole > 0) classify(c, p, whole);
  if (n > whole) {
    memcpy(c->tail, p + whole, n - whole);
    c->tail_len = n - whole;
  }
  if (final) {
    if (c->tail_len > 0) classify(c, c->tail, c->tail_len);
    c->tail_len = 0;
    end_zero_run(c);
    cut_decided(c, 1);
  }
  /* nothing may point into the piece after this call */
  if (c->pend_in_buf && c->pend_len > 0) {
    memmove(c->own, c->pend, c->pend_len);
    c->pend = c->own;
    c->pend_in_buf = 0;
  }
  if (c->zero_at) c->zero_at = NULL;
}

static void chunker_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  chunker_free(data);
}

static napi_value ChunkerNew(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 9) {
    napi_throw_type_error(env, "VMIFS_NATIVE", "chunkerNew needs 9 arguments");
    return NULL;
  }
  if (!vmifs_gear_ready()) {
    napi_throw_error(env, "VMIFS_NATIVE", "setGear was not called");
    return NULL;
  }
  uint32_t kind, a, b, cc, zmin, opts;
  uint64_t ms = 0, ml = 0;
  bool lossless;
  CHECK(napi_get_value_uint32(env, argv[0], &kind));
  CHECK(napi_get_value_uint32(env, argv[1], &a));
  CHECK(napi_get_value_uint32(env, argv[2], &b));
  CHECK(napi_get_value_uint32(env, argv[3], &cc));
  if (kind == 1) {
    CHECK(napi_get_value_bigint_uint64(env, argv[4], &ms, &lossless));
    CHECK(napi_get_value_bigint_uint64(env, argv[5], &ml, &lossless));
  }
  CHECK(napi_get_value_uint32(env, argv[6], &zmin));
  napi_typedarray_type tt;
  size_t ncuts;
  void *cuts;
  CHECK(napi_get_typedarray_info(env, argv[7], &tt, &ncuts, &cuts, NULL, NULL));
  CHECK(napi_get_value_uint32(env, argv[8], &opts));
  if (tt != napi_float64_array || kind > 1 || (kind == 0 && a == 0) || (kind == 1 && !(a < b && b < cc)) || zmin == 0) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "chunkerNew: bad parameters");
    return NULL;
  }
  chunker *c = calloc(1, sizeof *c);
  size_t own = kind == 0 ? a : 2 * (size_t)cc;
  if (c) {
    c->own = malloc(own);
    c->zeros = calloc(zmin, 1);
    c->cuts = malloc(ncuts * sizeof(double) + 1);
  }
  if (!c || !c->own || !c->zeros || !c->cuts) {
    if (c) chunker_free(c);
    return throw_errno(env, "chunkerNew", ENOMEM);
  }
  c->kind = (int)kind;
  c->opts = (int)opts;
  c->size = a;
  c->min = a;
  c->avg = b;
  c->max = cc;
  c->mask_s = ms;
  c->mask_l = ml;
  c->zmin = zmin;
  memcpy(c->cuts, cuts, ncuts * sizeof(double));
  c->ncuts = ncuts;
  c->pend = c->own;
  napi_status st = napi_create_external(env, c, chunker_finalize, NULL, &out);
  if (st != napi_ok) {
    chunker_free(c);
    napi_throw_error(env, "VMIFS_NATIVE", "napi_create_external failed");
    return NULL;
  }
  return out;
}

/* A new JS typed array (or Buffer, type < 0) holding the bytes of b. */
static napi_value array_of(napi_env env, bytes *b, napi_typedarray_type type, size_t each) {
  napi_value ab, out;
  void *p;
  if (napi_create_arraybuffer(env, b->len, &p, &ab) != napi_ok) return NULL;
  if (b->len) memcpy(p, b->p, b->len);
  if (napi_create_typedarray(env, type, b->len / each, ab, 0, &out) != napi_ok) return NULL;
  return out;
}

static napi_value ChunkerPush(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out, v;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  chunker *c;
  CHECK(napi_get_value_external(env, argv[0], (void **)&c));
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  bool final;
  CHECK(napi_get_value_bool(env, argv[2], &final));
  if (c->failed) return throw_errno(env, "chunkerPush", ENOMEM);
  c->piece = data;
  c->piece_len = len;
  c->lengths.len = c->offs.len = c->flags.len = c->hashes.len = c->crcs.len = c->spill.len = 0;
  if (c->kind == 0)
    push_fixed(c, data, len, final);
  else
    push_cdc(c, data, len, final);
  c->piece = NULL;
  c->piece_len = 0;
  if (c->failed) return throw_errno(env, "chunkerPush", ENOMEM);
  size_t n = c->flags.len;
  CHECK(napi_create_object(env, &out));
  CHECK(napi_create_uint32(env, (uint32_t)n, &v));
  CHECK(napi_set_named_property(env, out, "n", v));
  napi_value arr[5];
  arr[0] = array_of(env, &c->lengths, napi_float64_array, 8);
  arr[1] = array_of(env, &c->offs, napi_float64_array, 8);
  arr[2] = array_of(env, &c->flags, napi_uint8_array, 1);
  arr[3] = NULL;
  arr[4] = array_of(env, &c->crcs, napi_uint32_array, 4);
  static const uint8_t none[1];
  void *hp;
  CHECK(napi_create_buffer_copy(env, c->hashes.len, c->hashes.len ? c->hashes.p : none, &hp, &arr[3]));
  for (int i = 0; i < 5; i++)
    if (!arr[i]) {
      napi_throw_error(env, "VMIFS_NATIVE", "chunkerPush: out of memory");
      return NULL;
    }
  CHECK(napi_set_named_property(env, out, "lengths", arr[0]));
  CHECK(napi_set_named_property(env, out, "offs", arr[1]));
  CHECK(napi_set_named_property(env, out, "flags", arr[2]));
  CHECK(napi_set_named_property(env, out, "hashes", arr[3]));
  CHECK(napi_set_named_property(env, out, "crcs", arr[4]));
  if (c->spill.len > 0) {
    void *sp;
    CHECK(napi_create_buffer_copy(env, c->spill.len, c->spill.p, &sp, &v));
  } else {
    CHECK(napi_get_undefined(env, &v));
  }
  CHECK(napi_set_named_property(env, out, "spill", v));
  return out;
}

void vmifs_chunker_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"chunkerNew", NULL, ChunkerNew, NULL, NULL, NULL, napi_default, NULL},
      {"chunkerPush", NULL, ChunkerPush, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
