// The chunk store's index (src/cache/chunk-store.ts): what the packs hold, in LMDB (store.mdb in
// the data dir). Every process that opens the data dir opens it; LMDB lets one write transaction
// at a time in, readers never wait, and a process killed in a transaction leaves nothing of it.
// Commits write the pages with one fdatasync and the meta page without (MDB_NOMETASYNC): a power
// cut may undo the last commit, never corrupt the file.
//
// Tables (all numbers little-endian but where said):
//   entries  hash[32] -> pack u32, size u32, off u64, atime f64 (ms epoch), crc u32, flags u32
//            flags: 1 pinned, 2 no CRC yet (a chunk file of the layout before packs, pack 0)
//   lru      atime u64 big-endian (ms), hash[32] -> ""   the unpinned entries, oldest first
//   packs    id u32 big-endian -> size u64 (end of the last recorded chunk), live u32 (entries),
//            writer's tag length u32, the tag ("pid:starttime", none once sealed)
//   meta     "totals" -> bytes u64, count u64, pinned bytes u64; "next_pack" -> u32
//   refs     hash[32] -> size u32, refs u32, pins u32: how many local images refer to a chunk, and
//            how many of those are pinned (the catalog's: src/index/catalog.ts). An entry is pinned
//            exactly when its chunk's pins > 0: both change in the same transaction.
// Calls take many chunks at once (hashes: 32 bytes each, concatenated) and make one transaction.
#define _GNU_SOURCE
#include "bytes.h"
#include "napi_check.h"
#include <errno.h>
#include <lmdb.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { PINNED = 1, NO_CRC = 2, VAL = 32, LRU_KEY = 40, REC = 56, TAG_MAX = 256 };

/* One environment a file in this process, however often it is opened: LMDB must not have a file
 * open twice in one process (closing one descriptor would drop the other's locks). Handles count
 * references; the last to close closes it. */
typedef struct shared_env {
  MDB_env *env;
  MDB_dbi entries, lru, packs, meta, counts;
  dev_t dev;
  ino_t ino;
  int refs;
  struct shared_env *next;
} ix_t;

typedef struct {
  ix_t *ix;
} handle_t;

static ix_t *opened;
static pthread_mutex_t opened_lock = PTHREAD_MUTEX_INITIALIZER;

static void release(ix_t *ix) {
  pthread_mutex_lock(&opened_lock);
  if (--ix->refs == 0) {
    for (ix_t **p = &opened; *p; p = &(*p)->next)
      if (*p == ix) {
        *p = ix->next;
        break;
      }
    mdb_env_close(ix->env);
    free(ix);
  }
  pthread_mutex_unlock(&opened_lock);
}

typedef struct {
  uint32_t pack, size;
  uint64_t off;
  double atime;
  uint32_t crc, flags;
} entry;

typedef struct {
  uint64_t bytes, count, pinned;
} totals;

static void get_entry(const MDB_val *v, entry *e) {
  const uint8_t *p = v->mv_data;
  memcpy(&e->pack, p, 4);
  memcpy(&e->size, p + 4, 4);
  memcpy(&e->off, p + 8, 8);
  memcpy(&e->atime, p + 16, 8);
  memcpy(&e->crc, p + 24, 4);
  memcpy(&e->flags, p + 28, 4);
}

static void put_entry(uint8_t *p, const entry *e) {
  memcpy(p, &e->pack, 4);
  memcpy(p + 4, &e->size, 4);
  memcpy(p + 8, &e->off, 8);
  memcpy(p + 16, &e->atime, 8);
  memcpy(p + 24, &e->crc, 4);
  memcpy(p + 28, &e->flags, 4);
}

static void lru_key(uint8_t *k, double atime, const uint8_t *hash) {
  uint64_t t = atime > 0 ? (uint64_t)atime : 0;
  for (int i = 0; i < 8; i++)
    k[i] = (uint8_t)(t >> (56 - 8 * i));
  memcpy(k + 8, hash, 32);
}

static void be32(uint8_t *k, uint32_t v) {
  k[0] = (uint8_t)(v >> 24);
  k[1] = (uint8_t)(v >> 16);
  k[2] = (uint8_t)(v >> 8);
  k[3] = (uint8_t)v;
}

static uint32_t from_be32(const uint8_t *k) {
  return ((uint32_t)k[0] << 24) | ((uint32_t)k[1] << 16) | ((uint32_t)k[2] << 8) | k[3];
}

static napi_value throw_mdb(napi_env env, const char *what, int rc) {
  char msg[512];
  snprintf(msg, sizeof msg, "chunk index: %.300s: %s", what, mdb_strerror(rc));
  /* an error of the system's (a full disk: ENOSPC) keeps its errno's name, as Node's own errors do */
  const char *sys = rc > 0 ? strerrorname_np(rc) : NULL;
  napi_throw_error(env, sys ? sys : rc == MDB_MAP_FULL ? "STORE_INDEX_FULL" : "STORE_INDEX", msg);
  return NULL;
}

#define MDB(call, what)                   \
  do {                                    \
    int rc_ = (call);                     \
    if (rc_ != 0) {                       \
      if (txn) mdb_txn_abort(txn);        \
      return throw_mdb(env, (what), rc_); \
    }                                     \
  } while (0)

static int read_totals(MDB_txn *txn, ix_t *ix, totals *t) {
  MDB_val k = {6, "totals"}, v;
  memset(t, 0, sizeof *t);
  int rc = mdb_get(txn, ix->meta, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  if (v.mv_size >= sizeof *t) memcpy(t, v.mv_data, sizeof *t);
  return 0;
}

static int write_totals(MDB_txn *txn, ix_t *ix, const totals *t) {
  MDB_val k = {6, "totals"}, v = {sizeof *t, (void *)t};
  return mdb_put(txn, ix->meta, &k, &v, 0);
}

/* The pack row: size, live, tag (tag_len 0: sealed). Returns MDB_NOTFOUND when there is none. */
typedef struct {
  uint64_t size;
  uint32_t live, tag_len;
  char tag[TAG_MAX];
} pack_row;

static int get_pack(MDB_txn *txn, ix_t *ix, uint32_t id, pack_row *p) {
  uint8_t kb[4];
  be32(kb, id);
  MDB_val k = {4, kb}, v;
  int rc = mdb_get(txn, ix->packs, &k, &v);
  if (rc) return rc;
  const uint8_t *b = v.mv_data;
  memcpy(&p->size, b, 8);
  memcpy(&p->live, b + 8, 4);
  memcpy(&p->tag_len, b + 12, 4);
  if (p->tag_len > TAG_MAX) p->tag_len = TAG_MAX;
  memcpy(p->tag, b + 16, p->tag_len);
  return 0;
}

static int put_pack(MDB_txn *txn, ix_t *ix, uint32_t id, const pack_row *p) {
  uint8_t kb[4], vb[16 + TAG_MAX];
  be32(kb, id);
  memcpy(vb, &p->size, 8);
  memcpy(vb + 8, &p->live, 4);
  memcpy(vb + 12, &p->tag_len, 4);
  memcpy(vb + 16, p->tag, p->tag_len);
  MDB_val k = {4, kb}, v = {16 + p->tag_len, vb};
  return mdb_put(txn, ix->packs, &k, &v, 0);
}

/* A pack's live count and end change; a missing row is made (sealed). */
static int pack_add(MDB_txn *txn, ix_t *ix, uint32_t id, int64_t live, uint64_t end, int *now_empty_sealed) {
  pack_row p;
  int rc = get_pack(txn, ix, id, &p);
  if (rc == MDB_NOTFOUND) {
    memset(&p, 0, sizeof p);
  } else if (rc) {
    return rc;
  }
  int64_t l = (int64_t)p.live + live;
  p.live = l > 0 ? (uint32_t)l : 0;
  if (end > p.size) p.size = end;
  if (now_empty_sealed) *now_empty_sealed = p.live == 0 && p.tag_len == 0;
  return put_pack(txn, ix, id, &p);
}

/* The chunk's refs row: size, refs, pins (all 0 when there is none). */
typedef struct {
  uint32_t size, refs, pins;
} refs_row;

static int get_refs(MDB_txn *txn, ix_t *ix, const uint8_t *hash, refs_row *r) {
  MDB_val k = {32, (void *)hash}, v;
  int rc = mdb_get(txn, ix->counts, &k, &v);
  memset(r, 0, sizeof *r);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  if (v.mv_size >= 12) memcpy(r, v.mv_data, 12);
  return 0;
}

/* Sets an entry's pinned flag (and its place in the LRU order, and the totals); none: nothing. */
static int set_entry_pinned(MDB_txn *txn, ix_t *ix, const uint8_t *hash, int pin, totals *tot, int *changed) {
  MDB_val key = {32, (void *)hash}, v;
  int rc = mdb_get(txn, ix->entries, &key, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  entry e;
  get_entry(&v, &e);
  if (!!(e.flags & PINNED) == !!pin) return 0;
  uint8_t lk[LRU_KEY], vb[VAL];
  lru_key(lk, e.atime, hash);
  MDB_val lkey = {LRU_KEY, lk}, empty = {0, ""};
  if (pin) {
    rc = mdb_del(txn, ix->lru, &lkey, NULL);
    if (rc == MDB_NOTFOUND) rc = 0;
    e.flags |= PINNED;
    tot->pinned += e.size;
  } else {
    rc = mdb_put(txn, ix->lru, &lkey, &empty, 0);
    e.flags &= ~(uint32_t)PINNED;
    tot->pinned -= e.size < tot->pinned ? e.size : tot->pinned;
  }
  put_entry(vb, &e);
  MDB_val nv = {VAL, vb};
  if (!rc) rc = mdb_put(txn, ix->entries, &key, &nv, 0);
  if (!rc && changed) (*changed)++;
  return rc;
}

static void ix_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  handle_t *h = data;
  if (h->ix) release(h->ix);
  free(h);
}

static ix_t *get_ix(napi_env env, napi_value v) {
  handle_t *h;
  if (napi_get_value_external(env, v, (void **)&h) != napi_ok || !h || !h->ix) {
    napi_throw_error(env, "VMIFS_NATIVE", "the chunk index is closed");
    return NULL;
  }
  return h->ix;
}

static int get_hashes(napi_env env, napi_value v, uint8_t **p, size_t *n) {
  size_t len;
  if (napi_get_buffer_info(env, v, (void **)p, &len) != napi_ok || len % 32) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "hashes: a buffer of 32-byte hashes");
    return 0;
  }
  *n = len / 32;
  return 1;
}

static napi_value new_buffer(napi_env env, size_t len, uint8_t **p) {
  napi_value out;
  if (napi_create_buffer(env, len, (void **)p, &out) != napi_ok) return NULL;
  return out;
}

static napi_value new_u8(napi_env env, size_t n, uint8_t **p) {
  napi_value ab, out;
  if (napi_create_arraybuffer(env, n, (void **)p, &ab) != napi_ok) return NULL;
  if (napi_create_typedarray(env, napi_uint8_array, n, ab, 0, &out) != napi_ok) return NULL;
  memset(*p, 0, n);
  return out;
}

/* A 56-byte record of an entry: hash, pack u32, size u32, off u64, then crc u32 and flags u32, or
 * (with_atime) the access time f64. */
static void put_record(uint8_t *r, const void *hash, const entry *e, int with_atime) {
  memcpy(r, hash, 32);
  memcpy(r + 32, &e->pack, 4);
  memcpy(r + 36, &e->size, 4);
  memcpy(r + 40, &e->off, 8);
  if (with_atime) {
    memcpy(r + 48, &e->atime, 8);
  } else {
    memcpy(r + 48, &e->crc, 4);
    memcpy(r + 52, &e->flags, 4);
  }
}

/* A Buffer holding the n records at tmp, which it frees. */
static napi_value records_out(napi_env env, uint8_t *tmp, size_t n) {
  uint8_t *o;
  napi_value out = new_buffer(env, n * REC, &o);
  if (out && n) memcpy(o, tmp, n * REC);
  free(tmp);
  return out;
}

/* The indexes 0..n-1 in the order of their hashes' bytes (B-tree pages are then written in turn). */
static uint32_t *sorted(const uint8_t *hashes, size_t n) {
  uint32_t *idx = malloc((n ? n : 1) * sizeof *idx);
  if (!idx) return NULL;
  int in_order = 1;
  for (size_t i = 0; i < n; i++) {
    idx[i] = (uint32_t)i;
    if (i > 0 && in_order && memcmp(hashes + 32 * (i - 1), hashes + 32 * i, 32) > 0) in_order = 0;
  }
  if (!in_order) vmifs_order_by_hash(idx, n, hashes);
  return idx;
}

static int open_env(const char *path, ix_t *ix) {
  MDB_txn *txn = NULL;
  int rc = mdb_env_create(&ix->env);
  if (!rc) rc = mdb_env_set_maxdbs(ix->env, 5);
  /* address space only: the file grows with what is written */
  if (!rc) rc = mdb_env_set_mapsize(ix->env, (size_t)256 << 30);
  if (!rc) rc = mdb_env_set_maxreaders(ix->env, 512);
  if (!rc) rc = mdb_env_open(ix->env, path, MDB_NOSUBDIR | MDB_NOTLS | MDB_NOMETASYNC | MDB_NORDAHEAD, 0644);
  if (rc) {
    if (ix->env) mdb_env_close(ix->env);
    ix->env = NULL;
    return rc;
  }
  int dead;
  mdb_reader_check(ix->env, &dead); /* slots of readers that died */
  rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  if (!rc) rc = mdb_dbi_open(txn, "entries", MDB_CREATE, &ix->entries);
  if (!rc) rc = mdb_dbi_open(txn, "lru", MDB_CREATE, &ix->lru);
  if (!rc) rc = mdb_dbi_open(txn, "packs", MDB_CREATE, &ix->packs);
  if (!rc) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &ix->meta);
  if (!rc) rc = mdb_dbi_open(txn, "refs", MDB_CREATE, &ix->counts);
  if (!rc)
    rc = mdb_txn_commit(txn);
  else if (txn)
    mdb_txn_abort(txn);
  if (rc) {
    mdb_env_close(ix->env);
    ix->env = NULL;
  }
  return rc;
}

/** ixOpen(path) -> handle: opens (or makes) the index file; the same file twice shares one environment */
static napi_value IxOpen(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char path[4096];
  size_t plen;
  CHECK(napi_get_value_string_utf8(env, argv[0], path, sizeof path, &plen));
  handle_t *h = calloc(1, sizeof *h);
  if (!h) return throw_errno(env, "ixOpen", ENOMEM);
  pthread_mutex_lock(&opened_lock);
  struct stat st;
  int known = stat(path, &st) == 0;
  ix_t *ix = NULL;
  for (ix_t *p = opened; known && p && !ix; p = p->next)
    if (p->dev == st.st_dev && p->ino == st.st_ino) ix = p;
  int rc = 0;
  if (ix) {
    ix->refs++;
  } else {
    ix = calloc(1, sizeof *ix);
    rc = ix ? open_env(path, ix) : ENOMEM;
    if (!rc && stat(path, &st) != 0) rc = errno;
    if (rc) {
      free(ix);
      ix = NULL;
    } else {
      ix->dev = st.st_dev;
      ix->ino = st.st_ino;
      ix->refs = 1;
      ix->next = opened;
      opened = ix;
    }
  }
  pthread_mutex_unlock(&opened_lock);
  if (!ix) {
    free(h);
    return throw_mdb(env, path, rc);
  }
  h->ix = ix;
  if (napi_create_external(env, h, ix_finalize, NULL, &out) != napi_ok) {
    release(ix);
    free(h);
    napi_throw_error(env, "VMIFS_NATIVE", "napi_create_external failed");
    return NULL;
  }
  return out;
}

/** ixClose(handle): this handle's part of the environment (closed with the last) */
static napi_value IxClose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  handle_t *h;
  CHECK(napi_get_value_external(env, argv[0], (void **)&h));
  if (h && h->ix) {
    release(h->ix);
    h->ix = NULL;
  }
  return NULL;
}

/** ixHolds(ix, hashes) -> Uint8Array: 1 where the index has the chunk */
static napi_value IxHolds(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h, *o;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  napi_value out = new_u8(env, n, &o);
  if (!out) return NULL;
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn), "begin");
  for (size_t i = 0; i < n; i++) {
    MDB_val k = {32, h + 32 * i}, v;
    int rc = mdb_get(txn, ix->entries, &k, &v);
    if (rc && rc != MDB_NOTFOUND) MDB(rc, "get");
    o[i] = rc == 0;
  }
  mdb_txn_abort(txn);
  return out;
}

/**
 * ixLocate(ix, hashes, from, to) -> Buffer: a 56-byte record for each of hashes[from..to) the index
 * has: hash, pack u32, size u32, off u64, crc u32, flags u32, atime f64 (the FUSE session reads
 * the first 52 bytes: src/cache/chunk-store.ts, LOCATION_BYTES)
 */
static napi_value IxLocate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  uint32_t from = 0, to = (uint32_t)n;
  if (argc >= 3) CHECK(napi_get_value_uint32(env, argv[2], &from));
  if (argc >= 4) CHECK(napi_get_value_uint32(env, argv[3], &to));
  if (to > n || from > to) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixLocate: range outside the hashes");
    return NULL;
  }
  uint8_t *tmp = malloc(((size_t)(to - from) + 1) * REC);
  if (!tmp) return throw_errno(env, "ixLocate", ENOMEM);
  size_t got = 0;
  MDB_txn *txn = NULL;
  int rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
  for (uint32_t i = from; !rc && i < to; i++) {
    MDB_val k = {32, h + 32 * (size_t)i}, v;
    rc = mdb_get(txn, ix->entries, &k, &v);
    if (rc == MDB_NOTFOUND) {
      rc = 0;
      continue;
    }
    if (rc) break;
    entry e;
    get_entry(&v, &e);
    put_record(tmp + got * REC, h + 32 * (size_t)i, &e, 0);
    got++;
  }
  if (txn) mdb_txn_abort(txn);
  if (rc) {
    free(tmp);
    txn = NULL;
    MDB(rc, "locate");
  }
  return records_out(env, tmp, got);
}

/**
 * ixRecord(ix, hashes, locs, pins, now) -> Uint8Array fresh: records chunks whose bytes are in packs
 * (locs: Float64Array of pack, off, size, crc a chunk; pins: Uint8Array, 1 to pin). A chunk the
 * index has already keeps its entry (fresh 0), pinned if asked. Packs' live counts and ends grow.
 */
static napi_value IxRecord(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  napi_typedarray_type t1, t2;
  size_t nl, np;
  void *lp, *pp;
  CHECK(napi_get_typedarray_info(env, argv[2], &t1, &nl, &lp, NULL, NULL));
  CHECK(napi_get_typedarray_info(env, argv[3], &t2, &np, &pp, NULL, NULL));
  double now;
  CHECK(napi_get_value_double(env, argv[4], &now));
  if (t1 != napi_float64_array || t2 != napi_uint8_array || nl != 4 * n || np != n) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixRecord: 4 numbers and a pin flag a chunk");
    return NULL;
  }
  const double *locs = lp;
  const uint8_t *pins = pp;
  uint8_t *fresh;
  napi_value out = new_u8(env, n, &fresh);
  if (!out) return NULL;
  uint32_t *idx = sorted(h, n);
  if (!idx) return throw_errno(env, "ixRecord", ENOMEM);
  MDB_txn *txn = NULL;
  totals tot;
  int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  if (!rc) rc = read_totals(txn, ix, &tot);
  /* per pack: fresh entries and the end of the last; packs are few a call */
  enum { GROW = 16 };
  uint32_t gid[GROW];
  uint64_t gend[GROW];
  int64_t glive[GROW];
  int ng = 0;
  for (size_t k = 0; !rc && k < n; k++) {
    uint32_t i = idx[k];
    const uint8_t *hash = h + 32 * (size_t)i;
    MDB_val key = {32, (void *)hash};
    /* a chunk a pinned image holds is pinned however it comes in */
    int pin = pins[i];
    if (!pin) {
      refs_row r;
      rc = get_refs(txn, ix, hash, &r);
      if (rc) break;
      pin = r.pins > 0;
    }
    entry e = {.pack = (uint32_t)locs[4 * i],
               .off = (uint64_t)locs[4 * i + 1],
               .size = (uint32_t)locs[4 * i + 2],
               .crc = (uint32_t)locs[4 * i + 3],
               .atime = now,
               .flags = pin ? PINNED : 0};
    uint8_t vb[VAL];
    put_entry(vb, &e);
    MDB_val nv = {VAL, vb};
    /* one descent: a chunk held already comes back as MDB_KEYEXIST, nv pointing at its entry */
    rc = mdb_put(txn, ix->entries, &key, &nv, MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
      /* held already: it keeps its entry, pinned if asked */
      rc = pin ? set_entry_pinned(txn, ix, hash, 1, &tot, NULL) : 0;
      continue;
    }
    if (!rc && !pin) {
      uint8_t lk[LRU_KEY];
      lru_key(lk, now, hash);
      MDB_val lkey = {LRU_KEY, lk}, empty = {0, ""};
      rc = mdb_put(txn, ix->lru, &lkey, &empty, 0);
    }
    if (rc) break;
    fresh[i] = 1;
    tot.bytes += e.size;
    tot.count++;
    if (pin) tot.pinned += e.size;
    int g = 0;
    while (g < ng && gid[g] != e.pack)
      g++;
    if (g == ng) {
      if (ng == GROW) {
        /* more packs than slots in one call: settle the slots now */
        for (int j = 0; !rc && j < ng; j++)
          rc = pack_add(txn, ix, gid[j], glive[j], gend[j], NULL);
        ng = 0;
        g = 0;
      }
      gid[g] = e.pack;
      gend[g] = 0;
      glive[g] = 0;
      ng++;
    }
    glive[g]++;
    if (e.off + e.size > gend[g]) gend[g] = e.off + e.size;
  }
  for (int j = 0; !rc && j < ng; j++)
    rc = pack_add(txn, ix, gid[j], glive[j], gend[j], NULL);
  if (!rc) rc = write_totals(txn, ix, &tot);
  free(idx);
  if (rc) MDB(rc, "record");
  MDB(mdb_txn_commit(txn), "commit");
  return out;
}

/**
 * ixForget(ix, hashes) -> [removed, emptyPacks]: deletes the entries; removed holds a 56-byte
 * record (as ixLocate's) for each entry there was; emptyPacks the sealed packs left with none.
 */
static napi_value IxForget(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  uint8_t *tmp = malloc((n + 1) * REC);
  uint32_t *empty = malloc((n + 1) * sizeof *empty);
  uint32_t *idx = sorted(h, n);
  if (!tmp || !empty || !idx) {
    free(tmp);
    free(empty);
    free(idx);
    return throw_errno(env, "ixForget", ENOMEM);
  }
  size_t got = 0, nempty = 0;
  MDB_txn *txn = NULL;
  totals tot;
  int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  if (!rc) rc = read_totals(txn, ix, &tot);
  for (size_t k = 0; !rc && k < n; k++) {
    const uint8_t *hash = h + 32 * (size_t)idx[k];
    MDB_val key = {32, (void *)hash}, v;
    rc = mdb_get(txn, ix->entries, &key, &v);
    if (rc == MDB_NOTFOUND) {
      rc = 0;
      continue;
    }
    if (rc) break;
    entry e;
    get_entry(&v, &e);
    rc = mdb_del(txn, ix->entries, &key, NULL);
    if (!rc && !(e.flags & PINNED)) {
      uint8_t lk[LRU_KEY];
      lru_key(lk, e.atime, hash);
      MDB_val lkey = {LRU_KEY, lk};
      rc = mdb_del(txn, ix->lru, &lkey, NULL);
      if (rc == MDB_NOTFOUND) rc = 0;
    }
    if (rc) break;
    tot.bytes -= e.size < tot.bytes ? e.size : tot.bytes;
    if (tot.count) tot.count--;
    if (e.flags & PINNED) tot.pinned -= e.size < tot.pinned ? e.size : tot.pinned;
    if (e.pack != 0) {
      int now_empty = 0;
      rc = pack_add(txn, ix, e.pack, -1, 0, &now_empty);
      if (!rc && now_empty) empty[nempty++] = e.pack;
    }
    put_record(tmp + got * REC, hash, &e, 0);
    got++;
  }
  free(idx);
  if (!rc) rc = write_totals(txn, ix, &tot);
  if (rc) {
    free(tmp);
    free(empty);
    MDB(rc, "forget");
  }
  rc = mdb_txn_commit(txn);
  txn = NULL;
  if (rc) {
    free(tmp);
    free(empty);
    return throw_mdb(env, "commit", rc);
  }
  napi_value out, removed, ab, packs;
  uint8_t *o;
  void *po;
  removed = new_buffer(env, got * REC, &o);
  if (removed && got) memcpy(o, tmp, got * REC);
  free(tmp);
  /* a pack can empty once a call: the list has no repeats */
  if (napi_create_arraybuffer(env, nempty * 4, &po, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_uint32_array, nempty, ab, 0, &packs) != napi_ok || !removed) {
    free(empty);
    napi_throw_error(env, "VMIFS_NATIVE", "ixForget: out of memory");
    return NULL;
  }
  if (nempty) memcpy(po, empty, nempty * 4);
  free(empty);
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_set_element(env, out, 0, removed));
  CHECK(napi_set_element(env, out, 1, packs));
  return out;
}

/** ixTouch(ix, hashes, ats): the chunks were used at ats[i] (ms epoch; Float64Array); those not held are skipped */
static napi_value IxTouch(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  napi_typedarray_type tt;
  size_t na;
  void *ap;
  CHECK(napi_get_typedarray_info(env, argv[2], &tt, &na, &ap, NULL, NULL));
  if (tt != napi_float64_array || na != n) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixTouch: a time a chunk");
    return NULL;
  }
  const double *ats = ap;
  uint32_t *idx = sorted(h, n);
  if (!idx) return throw_errno(env, "ixTouch", ENOMEM);
  MDB_txn *txn = NULL;
  uint32_t changed = 0;
  int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  for (size_t k = 0; !rc && k < n; k++) {
    uint32_t i = idx[k];
    const uint8_t *hash = h + 32 * (size_t)i;
    MDB_val key = {32, (void *)hash}, v;
    rc = mdb_get(txn, ix->entries, &key, &v);
    if (rc == MDB_NOTFOUND) {
      rc = 0;
      continue;
    }
    if (rc) break;
    entry e;
    get_entry(&v, &e);
    if (ats[i] <= e.atime) continue;
    if (!(e.flags & PINNED)) {
      uint8_t lk[LRU_KEY];
      lru_key(lk, e.atime, hash);
      MDB_val lkey = {LRU_KEY, lk}, empty = {0, ""};
      rc = mdb_del(txn, ix->lru, &lkey, NULL);
      if (rc == MDB_NOTFOUND) rc = 0;
      lru_key(lk, ats[i], hash);
      if (!rc) rc = mdb_put(txn, ix->lru, &lkey, &empty, 0);
    }
    e.atime = ats[i];
    uint8_t vb[VAL];
    put_entry(vb, &e);
    MDB_val nv = {VAL, vb};
    if (!rc) rc = mdb_put(txn, ix->entries, &key, &nv, 0);
    changed++;
  }
  free(idx);
  if (rc) MDB(rc, "touch");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_uint32(env, changed, &out));
  return out;
}

/** ixSetPinned(ix, hashes, pinned) -> number: entries whose flag changed */
static napi_value IxSetPinned(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  bool pin;
  CHECK(napi_get_value_bool(env, argv[2], &pin));
  uint32_t *idx = sorted(h, n);
  if (!idx) return throw_errno(env, "ixSetPinned", ENOMEM);
  MDB_txn *txn = NULL;
  totals tot;
  int changed = 0;
  int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  if (!rc) rc = read_totals(txn, ix, &tot);
  for (size_t k = 0; !rc && k < n; k++)
    rc = set_entry_pinned(txn, ix, h + 32 * (size_t)idx[k], pin, &tot, &changed);
  free(idx);
  if (!rc) rc = write_totals(txn, ix, &tot);
  if (rc) MDB(rc, "set pinned");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_uint32(env, (uint32_t)changed, &out));
  return out;
}

/**
 * ixLru(ix, after, limit, unreferenced) -> [records, next]: the unpinned entries least recently used
 * first, after the place `after` names (a `next` of an earlier call, or undefined to start), at most
 * limit; with unreferenced, only those no local image refers to. Records are 56 bytes as
 * ixLocate's, atime (f64) in bytes 48..56 instead of crc and flags; next is where the walk stopped
 * (undefined at the end).
 */
static napi_value IxLru(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  uint32_t limit;
  CHECK(napi_get_value_uint32(env, argv[2], &limit));
  bool unref = false;
  if (argc >= 4) CHECK(napi_get_value_bool(env, argv[3], &unref));
  napi_valuetype at;
  CHECK(napi_typeof(env, argv[1], &at));
  uint8_t start[LRU_KEY];
  int has_start = 0;
  if (at != napi_undefined) {
    uint8_t *a;
    size_t alen;
    CHECK(napi_get_buffer_info(env, argv[1], (void **)&a, &alen));
    if (alen != LRU_KEY) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "ixLru: after is a place of an earlier call");
      return NULL;
    }
    memcpy(start, a, LRU_KEY);
    has_start = 1;
  }
  uint8_t *tmp = malloc(((size_t)limit + 1) * REC);
  if (!tmp) return throw_errno(env, "ixLru", ENOMEM);
  size_t got = 0;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  int rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
  if (!rc) rc = mdb_cursor_open(txn, ix->lru, &cur);
  MDB_val k, v;
  if (!rc) {
    if (has_start) {
      k.mv_size = LRU_KEY;
      k.mv_data = start;
      rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
      if (!rc && k.mv_size == LRU_KEY && memcmp(k.mv_data, start, LRU_KEY) == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else {
      rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
  }
  uint8_t last[LRU_KEY];
  int walked = 0, ended = 0;
  /* a page walks at most 16 times the limit when most are referenced: the caller goes on from next */
  for (size_t seen = 0; !rc && got < limit && seen < 16 * (size_t)limit + 16; seen++) {
    const uint8_t *hash = (const uint8_t *)k.mv_data + 8;
    memcpy(last, k.mv_data, LRU_KEY);
    walked = 1;
    MDB_val ek = {32, (void *)hash}, ev;
    refs_row rr = {0, 0, 0};
    if (unref) rc = get_refs(txn, ix, hash, &rr);
    if (!rc && rr.refs > 0) {
      rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
      continue;
    }
    if (!rc) rc = mdb_get(txn, ix->entries, &ek, &ev);
    if (!rc) {
      entry e;
      get_entry(&ev, &e);
      put_record(tmp + got * REC, hash, &e, 1);
      got++;
    } else if (rc != MDB_NOTFOUND) {
      break;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  if (rc == MDB_NOTFOUND) ended = 1;
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  if (rc && rc != MDB_NOTFOUND) {
    free(tmp);
    return throw_mdb(env, "lru", rc);
  }
  uint8_t *o;
  napi_value out, records = new_buffer(env, got * REC, &o), next;
  if (records && got) memcpy(o, tmp, got * REC);
  free(tmp);
  if (!records) return NULL;
  if (ended || !walked) {
    CHECK(napi_get_undefined(env, &next));
  } else {
    uint8_t *nb;
    next = new_buffer(env, LRU_KEY, &nb);
    if (!next) return NULL;
    memcpy(nb, last, LRU_KEY);
  }
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_set_element(env, out, 0, records));
  CHECK(napi_set_element(env, out, 1, next));
  return out;
}

/**
 * ixEntries(ix, after, limit) -> Buffer: entries in hash order after the hash `after` (a Buffer, or
 * undefined to start), as ixLocate's records
 */
static napi_value IxEntries(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  uint32_t limit;
  CHECK(napi_get_value_uint32(env, argv[2], &limit));
  napi_valuetype at;
  CHECK(napi_typeof(env, argv[1], &at));
  uint8_t *after = NULL;
  if (at != napi_undefined) {
    size_t alen;
    CHECK(napi_get_buffer_info(env, argv[1], (void **)&after, &alen));
    if (alen < 32) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "ixEntries: after is a hash");
      return NULL;
    }
  }
  uint8_t *tmp = malloc(((size_t)limit + 1) * REC);
  if (!tmp) return throw_errno(env, "ixEntries", ENOMEM);
  size_t got = 0;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  int rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
  if (!rc) rc = mdb_cursor_open(txn, ix->entries, &cur);
  MDB_val k, v;
  if (!rc) {
    if (after) {
      k.mv_size = 32;
      k.mv_data = after;
      rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
      if (!rc && memcmp(k.mv_data, after, 32) == 0) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    } else {
      rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    }
  }
  while (!rc && got < limit) {
    entry e;
    get_entry(&v, &e);
    put_record(tmp + got * REC, k.mv_data, &e, 0);
    got++;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  if (rc && rc != MDB_NOTFOUND) {
    free(tmp);
    return throw_mdb(env, "entries", rc);
  }
  return records_out(env, tmp, got);
}

/** ixTotals(ix) -> Float64Array [bytes, count, pinned bytes] */
static napi_value IxTotals(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], ab, out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  MDB_txn *txn = NULL;
  totals t;
  MDB(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn), "begin");
  MDB(read_totals(txn, ix, &t), "totals");
  mdb_txn_abort(txn);
  double *o;
  CHECK(napi_create_arraybuffer(env, 24, (void **)&o, &ab));
  CHECK(napi_create_typedarray(env, napi_float64_array, 3, ab, 0, &out));
  o[0] = (double)t.bytes;
  o[1] = (double)t.count;
  o[2] = (double)t.pinned;
  return out;
}

/**
 * ixSetEntry(ix, hash, pack, off, crc, onlyPack) -> boolean: moves an entry (and its CRC) to a place
 * in a pack, where its pack is onlyPack (-1: whatever it is): a chunk file of the layout before
 * packs (pack 0) converted by fsck, or a CRC put right (same place). The pack grows.
 */
static napi_value IxSetEntry(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  uint8_t *h;
  size_t hl;
  CHECK(napi_get_buffer_info(env, argv[1], (void **)&h, &hl));
  double pack, off, crc, only;
  CHECK(napi_get_value_double(env, argv[2], &pack));
  CHECK(napi_get_value_double(env, argv[3], &off));
  CHECK(napi_get_value_double(env, argv[4], &crc));
  CHECK(napi_get_value_double(env, argv[5], &only));
  if (hl != 32) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixSetEntry: a 32-byte hash");
    return NULL;
  }
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  MDB_val key = {32, h}, v;
  int rc = mdb_get(txn, ix->entries, &key, &v);
  int done = 0;
  if (rc == 0) {
    entry e;
    get_entry(&v, &e);
    if (only < 0 || e.pack == (uint32_t)only) {
      int moved = e.pack != (uint32_t)pack || e.off != (uint64_t)off;
      if (moved && e.pack != 0) rc = pack_add(txn, ix, e.pack, -1, 0, NULL);
      e.pack = (uint32_t)pack;
      e.off = (uint64_t)off;
      e.crc = (uint32_t)crc;
      e.flags &= ~(uint32_t)NO_CRC;
      uint8_t vb[VAL];
      put_entry(vb, &e);
      MDB_val nv = {VAL, vb};
      if (!rc) rc = mdb_put(txn, ix->entries, &key, &nv, 0);
      if (!rc && moved) rc = pack_add(txn, ix, e.pack, 1, e.off + e.size, NULL);
      done = 1;
    }
  } else if (rc == MDB_NOTFOUND) {
    rc = 0;
  }
  if (rc) MDB(rc, "set entry");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_get_boolean(env, done, &out));
  return out;
}

/* Counts the totals and every pack's live entries and end again from the entries. */
static int recount(MDB_txn *txn, ix_t *ix) {
  totals t = {0, 0, 0};
  size_t np = 0, cap = 0;
  struct {
    uint32_t id, live;
    uint64_t end;
  } *per = NULL;
  MDB_cursor *cur;
  int rc = mdb_cursor_open(txn, ix->entries, &cur);
  if (rc) return rc;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    entry e;
    get_entry(&v, &e);
    t.bytes += e.size;
    t.count++;
    if (e.flags & PINNED) t.pinned += e.size;
    if (e.pack == 0) continue;
    size_t j = 0;
    while (j < np && per[j].id != e.pack)
      j++;
    if (j == np) {
      if (np == cap) {
        cap = cap ? 2 * cap : 64;
        void *q = realloc(per, cap * sizeof *per);
        if (!q) {
          rc = ENOMEM;
          break;
        }
        per = q;
      }
      per[np].id = e.pack;
      per[np].live = 0;
      per[np].end = 0;
      np++;
    }
    per[j].live++;
    if (e.off + e.size > per[j].end) per[j].end = e.off + e.size;
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) {
    free(per);
    return rc ? rc : EIO;
  }
  rc = write_totals(txn, ix, &t);
  /* every pack row: live from the entries (0 if none), end at least the last entry's */
  if (!rc) rc = mdb_cursor_open(txn, ix->packs, &cur);
  if (rc) {
    free(per);
    return rc;
  }
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    uint32_t id = from_be32(k.mv_data);
    pack_row p;
    rc = get_pack(txn, ix, id, &p);
    if (rc) break;
    uint32_t live = 0;
    uint64_t end = 0;
    for (size_t j = 0; j < np; j++)
      if (per[j].id == id) {
        live = per[j].live;
        end = per[j].end;
        per[j].id = 0;
      }
    p.live = live;
    if (end > p.size) p.size = end;
    rc = put_pack(txn, ix, id, &p);
    if (rc) break;
  }
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) rc = 0;
  /* entries in packs without a row: rows made for them (sealed) */
  for (size_t j = 0; !rc && j < np; j++)
    if (per[j].id) {
      pack_row p = {.size = per[j].end, .live = per[j].live, .tag_len = 0};
      rc = put_pack(txn, ix, per[j].id, &p);
    }
  free(per);
  return rc;
}

/**
 * ixLoad(ix, records) -> number: entries as they are elsewhere (64-byte records: hash, pack u32,
 * size u32, off u64, atime f64, crc u32, flags u32), written over any the index has; then the
 * totals and the packs' live counts are counted again. For moving an index of another kind in.
 */
static napi_value IxLoad(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  uint8_t *r;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], (void **)&r, &len));
  if (len % 64) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixLoad: 64-byte records");
    return NULL;
  }
  size_t n = len / 64;
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  int rc = 0;
  for (size_t i = 0; !rc && i < n; i++) {
    const uint8_t *p = r + i * 64;
    MDB_val key = {32, (void *)p}, v;
    /* an entry there was: its LRU key goes first */
    rc = mdb_get(txn, ix->entries, &key, &v);
    if (rc == 0) {
      entry old;
      get_entry(&v, &old);
      uint8_t lk[LRU_KEY];
      lru_key(lk, old.atime, p);
      MDB_val lkey = {LRU_KEY, lk};
      rc = mdb_del(txn, ix->lru, &lkey, NULL);
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    if (rc) break;
    entry e;
    memcpy(&e.pack, p + 32, 4);
    memcpy(&e.size, p + 36, 4);
    memcpy(&e.off, p + 40, 8);
    memcpy(&e.atime, p + 48, 8);
    memcpy(&e.crc, p + 56, 4);
    memcpy(&e.flags, p + 60, 4);
    uint8_t vb[VAL];
    put_entry(vb, &e);
    MDB_val nv = {VAL, vb};
    rc = mdb_put(txn, ix->entries, &key, &nv, 0);
    if (!rc && !(e.flags & PINNED)) {
      uint8_t lk[LRU_KEY];
      lru_key(lk, e.atime, p);
      MDB_val lkey = {LRU_KEY, lk}, empty = {0, ""};
      rc = mdb_put(txn, ix->lru, &lkey, &empty, 0);
    }
  }
  if (!rc) rc = recount(txn, ix);
  if (rc) MDB(rc, "load");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_uint32(env, (uint32_t)n, &out));
  return out;
}

/** ixRecount(ix): the totals and the packs' live counts and ends, from the entries (fsck) */
static napi_value IxRecount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  MDB(recount(txn, ix), "recount");
  MDB(mdb_txn_commit(txn), "commit");
  return NULL;
}

/** ixPackNew(ix, tag) -> id: a pack row for a writer (its tag), empty */
static napi_value IxPackNew(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  pack_row p = {0};
  size_t tl;
  CHECK(napi_get_value_string_utf8(env, argv[1], p.tag, TAG_MAX, &tl));
  p.tag_len = (uint32_t)tl;
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  MDB_val k = {9, "next_pack"}, v;
  uint32_t id = 1;
  int rc = mdb_get(txn, ix->meta, &k, &v);
  if (rc == 0 && v.mv_size == 4)
    memcpy(&id, v.mv_data, 4);
  else if (rc && rc != MDB_NOTFOUND)
    MDB(rc, "next pack");
  /* past every row there is (rows moved in, or made by fsck, may be higher) */
  MDB_cursor *cur;
  MDB(mdb_cursor_open(txn, ix->packs, &cur), "cursor");
  MDB_val pk, pv;
  if (mdb_cursor_get(cur, &pk, &pv, MDB_LAST) == 0 && from_be32(pk.mv_data) >= id) id = from_be32(pk.mv_data) + 1;
  mdb_cursor_close(cur);
  uint32_t next = id + 1;
  MDB_val nv = {4, &next};
  MDB(mdb_put(txn, ix->meta, &k, &nv, 0), "next pack");
  MDB(put_pack(txn, ix, id, &p), "new pack");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_uint32(env, id, &out));
  return out;
}

/**
 * ixPackSet(ix, id, what, tag?) -> [live, sealed]: what 0: seal it (its writer is done), 1: make a row
 * if there is none (sealed, empty), 2: delete the row, 3: name its writer (tag)
 */
static napi_value IxPackSet(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], out, v;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  uint32_t id, what;
  CHECK(napi_get_value_uint32(env, argv[1], &id));
  CHECK(napi_get_value_uint32(env, argv[2], &what));
  char tag[TAG_MAX];
  size_t tl = 0;
  if (what == 3) CHECK(napi_get_value_string_utf8(env, argv[3], tag, TAG_MAX, &tl));
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  pack_row p;
  int rc = get_pack(txn, ix, id, &p);
  if (rc == MDB_NOTFOUND) {
    memset(&p, 0, sizeof p);
    if (what == 1)
      rc = put_pack(txn, ix, id, &p);
    else
      rc = 0;
  } else if (rc == 0) {
    if (what == 0) {
      p.tag_len = 0;
      rc = put_pack(txn, ix, id, &p);
    } else if (what == 3) {
      memcpy(p.tag, tag, tl);
      p.tag_len = (uint32_t)tl;
      rc = put_pack(txn, ix, id, &p);
    } else if (what == 2) {
      uint8_t kb[4];
      be32(kb, id);
      MDB_val k = {4, kb};
      rc = mdb_del(txn, ix->packs, &k, NULL);
    }
  }
  if (rc) MDB(rc, "pack");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_uint32(env, p.live, &v));
  CHECK(napi_set_element(env, out, 0, v));
  CHECK(napi_get_boolean(env, p.tag_len == 0, &v));
  CHECK(napi_set_element(env, out, 1, v));
  return out;
}

/** ixPacks(ix) -> Array<[id, size, live, writer | null]> */
static napi_value IxPacks(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  CHECK(napi_create_array(env, &out));
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn), "begin");
  MDB_cursor *cur;
  MDB(mdb_cursor_open(txn, ix->packs, &cur), "cursor");
  MDB_val k, v;
  uint32_t n = 0;
  int rc;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    uint32_t id = from_be32(k.mv_data);
    pack_row p;
    const uint8_t *b = v.mv_data;
    memcpy(&p.size, b, 8);
    memcpy(&p.live, b + 8, 4);
    memcpy(&p.tag_len, b + 12, 4);
    if (p.tag_len > TAG_MAX) p.tag_len = TAG_MAX;
    napi_value row, x;
    if (napi_create_array_with_length(env, 4, &row) != napi_ok) break;
    napi_create_uint32(env, id, &x);
    napi_set_element(env, row, 0, x);
    napi_create_double(env, (double)p.size, &x);
    napi_set_element(env, row, 1, x);
    napi_create_uint32(env, p.live, &x);
    napi_set_element(env, row, 2, x);
    if (p.tag_len)
      napi_create_string_utf8(env, (const char *)b + 16, p.tag_len, &x);
    else
      napi_get_null(env, &x);
    napi_set_element(env, row, 3, x);
    napi_set_element(env, out, n++, row);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  if (rc != MDB_NOTFOUND) return throw_mdb(env, "packs", rc);
  return out;
}

/**
 * ixRefs(ix, hashes, sizes, dRefs, dPins, entries) -> Uint8Array: the catalog's counts of distinct
 * chunks change (an image added, removed, pinned or unpinned); sizes (Float64Array) where the rows
 * may be new. Returns a flag a chunk: 1 no image refers to it any more (its row is gone), 2 no
 * pinned image holds it any more. Entries are pinned and unpinned with their counts, in this
 * transaction (entries false: the caller's entries are pinned already, an import's).
 */
static napi_value IxRefs(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  napi_valuetype st;
  CHECK(napi_typeof(env, argv[2], &st));
  const double *sizes = NULL;
  if (st != napi_undefined) {
    napi_typedarray_type tt;
    size_t ns;
    void *sp;
    CHECK(napi_get_typedarray_info(env, argv[2], &tt, &ns, &sp, NULL, NULL));
    if (tt != napi_float64_array || ns != n) {
      napi_throw_range_error(env, "VMIFS_NATIVE", "ixRefs: a size a chunk");
      return NULL;
    }
    sizes = sp;
  }
  int32_t dr, dp;
  CHECK(napi_get_value_int32(env, argv[3], &dr));
  CHECK(napi_get_value_int32(env, argv[4], &dp));
  bool entries = true;
  if (argc >= 6) {
    napi_valuetype et;
    CHECK(napi_typeof(env, argv[5], &et));
    if (et == napi_boolean) CHECK(napi_get_value_bool(env, argv[5], &entries));
  }
  uint8_t *flags;
  napi_value out = new_u8(env, n, &flags);
  if (!out) return NULL;
  uint32_t *idx = sorted(h, n);
  if (!idx) return throw_errno(env, "ixRefs", ENOMEM);
  MDB_txn *txn = NULL;
  totals tot;
  int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  if (!rc) rc = read_totals(txn, ix, &tot);
  for (size_t k = 0; !rc && k < n; k++) {
    uint32_t i = idx[k];
    const uint8_t *hash = h + 32 * (size_t)i;
    MDB_val key = {32, (void *)hash};
    refs_row r = {sizes ? (uint32_t)sizes[i] : 0, dr > 0 ? (uint32_t)dr : 0, 0};
    r.pins = dp > 0 && (uint32_t)dp < r.refs ? (uint32_t)dp : (dp > 0 ? r.refs : 0);
    if (r.refs > 0) {
      /* a new row (an image's new chunks) in one descent; one there is comes back as MDB_KEYEXIST */
      MDB_val nv = {12, &r};
      rc = mdb_put(txn, ix->counts, &key, &nv, MDB_NOOVERWRITE);
      if (rc == 0) {
        if (entries && r.pins > 0) rc = set_entry_pinned(txn, ix, hash, 1, &tot, NULL);
        continue;
      }
      if (rc != MDB_KEYEXIST) break;
      rc = 0;
      if (nv.mv_size >= 12) memcpy(&r, nv.mv_data, 12);
    } else {
      rc = get_refs(txn, ix, hash, &r);
      if (rc) break;
    }
    uint32_t pins0 = r.pins;
    int64_t refs = (int64_t)r.refs + dr, pins = (int64_t)r.pins + dp;
    r.refs = refs > 0 ? (uint32_t)refs : 0;
    r.pins = pins > 0 ? (uint32_t)pins : 0;
    if (r.pins > r.refs) r.pins = r.refs;
    if (sizes) r.size = (uint32_t)sizes[i];
    if (r.refs == 0) {
      rc = mdb_del(txn, ix->counts, &key, NULL);
      if (rc == MDB_NOTFOUND) rc = 0;
      flags[i] |= 1;
    } else {
      MDB_val v = {12, &r};
      rc = mdb_put(txn, ix->counts, &key, &v, 0);
    }
    if (!rc && entries && pins0 == 0 && r.pins > 0) rc = set_entry_pinned(txn, ix, hash, 1, &tot, NULL);
    if (!rc && pins0 > 0 && r.pins == 0) {
      flags[i] |= 2;
      if (entries) rc = set_entry_pinned(txn, ix, hash, 0, &tot, NULL);
    }
  }
  free(idx);
  if (!rc) rc = write_totals(txn, ix, &tot);
  if (rc) MDB(rc, "refs");
  MDB(mdb_txn_commit(txn), "commit");
  return out;
}

/** ixRefsGet(ix, hashes) -> Float64Array: size, refs, pins a chunk (0, 0, 0 where no image refers to it) */
static napi_value IxRefsGet(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], ab, out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  double *o;
  CHECK(napi_create_arraybuffer(env, n * 24, (void **)&o, &ab));
  CHECK(napi_create_typedarray(env, napi_float64_array, 3 * n, ab, 0, &out));
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn), "begin");
  for (size_t i = 0; i < n; i++) {
    refs_row r;
    MDB(get_refs(txn, ix, h + 32 * i, &r), "refs");
    o[3 * i] = r.size;
    o[3 * i + 1] = r.refs;
    o[3 * i + 2] = r.pins;
  }
  mdb_txn_abort(txn);
  return out;
}

/**
 * ixRefsRebuild(ix, hashes, sizes, pins) -> number of rows: the counts made again from the images
 * (fsck): each image's distinct chunks one after the other, pins[i] 1 where that image is pinned.
 * What a crash between the catalog's two transactions left counted too high is put right.
 */
static napi_value IxRefsRebuild(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  uint8_t *h;
  size_t n;
  if (!ix || !get_hashes(env, argv[1], &h, &n)) return NULL;
  napi_typedarray_type t1, t2;
  size_t n1, n2;
  void *sp, *pp;
  CHECK(napi_get_typedarray_info(env, argv[2], &t1, &n1, &sp, NULL, NULL));
  CHECK(napi_get_typedarray_info(env, argv[3], &t2, &n2, &pp, NULL, NULL));
  if (t1 != napi_float64_array || t2 != napi_uint8_array || n1 != n || n2 != n) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixRefsRebuild: a size and a pin flag a chunk");
    return NULL;
  }
  const double *sizes = sp;
  const uint8_t *pins = pp;
  uint32_t *idx = sorted(h, n);
  if (!idx) return throw_errno(env, "ixRefsRebuild", ENOMEM);
  MDB_txn *txn = NULL;
  uint32_t rows = 0;
  int rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
  if (!rc) rc = mdb_drop(txn, ix->counts, 0);
  for (size_t k = 0; !rc && k < n;) {
    /* the same chunk from several images: one row */
    size_t j = k;
    refs_row r = {(uint32_t)sizes[idx[k]], 0, 0};
    while (j < n && memcmp(h + 32 * (size_t)idx[j], h + 32 * (size_t)idx[k], 32) == 0) {
      r.refs++;
      r.pins += pins[idx[j]] ? 1 : 0;
      j++;
    }
    MDB_val key = {32, h + 32 * (size_t)idx[k]}, v = {12, &r};
    rc = mdb_put(txn, ix->counts, &key, &v, 0);
    rows++;
    k = j;
  }
  free(idx);
  if (rc) MDB(rc, "rebuild refs");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_uint32(env, rows, &out));
  return out;
}

/** ixReconcilePins(ix) -> number: every entry pinned exactly when a pinned image holds its chunk */
static napi_value IxReconcilePins(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  totals tot;
  MDB(read_totals(txn, ix, &tot), "totals");
  /* the hashes first: the walk must not run over entries it is changing */
  bytes todo = {0};
  MDB_cursor *cur;
  MDB(mdb_cursor_open(txn, ix->entries, &cur), "cursor");
  MDB_val k, v;
  int rc;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    entry e;
    get_entry(&v, &e);
    refs_row r;
    rc = get_refs(txn, ix, k.mv_data, &r);
    if (rc) break;
    if (!!(e.flags & PINNED) == (r.pins > 0)) continue;
    if (room(&todo, 33)) {
      rc = ENOMEM;
      break;
    }
    memcpy(todo.p + todo.len, k.mv_data, 32);
    todo.p[todo.len + 32] = r.pins > 0;
    todo.len += 33;
  }
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND) rc = 0;
  int changed = 0;
  for (size_t at = 0; !rc && at < todo.len; at += 33)
    rc = set_entry_pinned(txn, ix, todo.p + at, todo.p[at + 32], &tot, &changed);
  free(todo.p);
  if (!rc) rc = write_totals(txn, ix, &tot);
  if (rc) MDB(rc, "reconcile pins");
  MDB(mdb_txn_commit(txn), "commit");
  CHECK(napi_create_uint32(env, (uint32_t)changed, &out));
  return out;
}

/** ixLoadRefs(ix, records): rows as they are elsewhere (44 bytes: hash, size u32, refs u32, pins u32), written over */
static napi_value IxLoadRefs(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ix_t *ix = get_ix(env, argv[0]);
  if (!ix) return NULL;
  uint8_t *r;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], (void **)&r, &len));
  if (len % 44) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "ixLoadRefs: 44-byte records");
    return NULL;
  }
  MDB_txn *txn = NULL;
  MDB(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
  for (size_t at = 0; at < len; at += 44) {
    MDB_val k = {32, r + at}, v = {12, r + at + 32};
    MDB(mdb_put(txn, ix->counts, &k, &v, 0), "load refs");
  }
  MDB(mdb_txn_commit(txn), "commit");
  return NULL;
}

void vmifs_index_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"ixOpen", NULL, IxOpen, NULL, NULL, NULL, napi_default, NULL},
      {"ixClose", NULL, IxClose, NULL, NULL, NULL, napi_default, NULL},
      {"ixHolds", NULL, IxHolds, NULL, NULL, NULL, napi_default, NULL},
      {"ixLocate", NULL, IxLocate, NULL, NULL, NULL, napi_default, NULL},
      {"ixRecord", NULL, IxRecord, NULL, NULL, NULL, napi_default, NULL},
      {"ixForget", NULL, IxForget, NULL, NULL, NULL, napi_default, NULL},
      {"ixTouch", NULL, IxTouch, NULL, NULL, NULL, napi_default, NULL},
      {"ixSetPinned", NULL, IxSetPinned, NULL, NULL, NULL, napi_default, NULL},
      {"ixLru", NULL, IxLru, NULL, NULL, NULL, napi_default, NULL},
      {"ixEntries", NULL, IxEntries, NULL, NULL, NULL, napi_default, NULL},
      {"ixTotals", NULL, IxTotals, NULL, NULL, NULL, napi_default, NULL},
      {"ixSetEntry", NULL, IxSetEntry, NULL, NULL, NULL, napi_default, NULL},
      {"ixLoad", NULL, IxLoad, NULL, NULL, NULL, napi_default, NULL},
      {"ixRecount", NULL, IxRecount, NULL, NULL, NULL, napi_default, NULL},
      {"ixPackNew", NULL, IxPackNew, NULL, NULL, NULL, napi_default, NULL},
      {"ixPackSet", NULL, IxPackSet, NULL, NULL, NULL, napi_default, NULL},
      {"ixPacks", NULL, IxPacks, NULL, NULL, NULL, napi_default, NULL},
      {"ixRefs", NULL, IxRefs, NULL, NULL, NULL, napi_default, NULL},
      {"ixRefsGet", NULL, IxRefsGet, NULL, NULL, NULL, napi_default, NULL},
      {"ixRefsRebuild", NULL, IxRefsRebuild, NULL, NULL, NULL, napi_default, NULL},
      {"ixReconcilePins", NULL, IxReconcilePins, NULL, NULL, NULL, napi_default, NULL},
      {"ixLoadRefs", NULL, IxLoadRefs, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
