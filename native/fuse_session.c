// The FUSE session of the mount, served by native threads over /dev/fuse (the kernel protocol
// itself, no libfuse): one or more workers per core read requests and answer lookups, attributes,
// directory listings and reads of cached chunks here, never entering JavaScript for them: a chunk
// is read from its pack file (descriptors kept open; O_DIRECT unless the page cache holds it) and
// its bytes checked whole against the CRC32C the store recorded for it before any of it is served.
// What needs the agent (a read touching a chunk this side does not know the place of, or whose
// bytes there are not the chunk's; the first open of an image whose manifest is not loaded yet;
// every open of .stats) is handed to JavaScript through a thread-safe function and answered
// later, from any thread, by its unique id.
//
// The filesystem:   /images/<name>   /by-digest/<digest>   /.stats
// Inode numbers are derived from the image digest (the first 8 bytes, top bit set), so both names
// of one image are one inode, the kernel's page cache of it is shared, and a successor that sees
// the same catalog resolves the same numbers without being told.
//
// JavaScript keeps three things current: the image list (setImages), each opened image's manifest
// (setManifest), and where the chunk store holds the chunks of opened images (markCached /
// markUncached, packsChanged). Reads served here are reported back as events (drainEvents), for statistics,
// usage traces, read-ahead and the cache's access times.
#define _GNU_SOURCE
#include "crc32c.h"
#include "napi_check.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <node_api.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { INO_ROOT = 1, INO_IMAGES = 2, INO_BYDIGEST = 3, INO_STATS = 4 };
enum { OUR_MINOR = 40, MAX_PAGES = 256, MAX_READ = MAX_PAGES * 4096, MAX_WORKERS = 64, ALIGN = 4096 };
/* protocol 7.40 (kernel 6.9), newer than the headers here: the kernel re-queues the requests a dead
 * daemon had read but not answered when its successor sends FUSE_NOTIFY_RESEND */
#ifndef FUSE_INIT_EXT
#define FUSE_INIT_EXT (1 << 30)
#endif
#define VMIFS_HAS_RESEND_FLAGS2 (1u << (39 - 32))
#define VMIFS_NOTIFY_RESEND 7
/** What a worker hands to JavaScript. */
enum { REQ_READ = 1, REQ_OPEN = 2, REQ_OPEN_STATS = 3, REQ_EVENTS = 4, REQ_REFRESH = 5, REQ_READ_STATS = 6 };
/** Events reported to JavaScript: a read served here, an image opened, an image released. */
enum { EV_READ = 1, EV_OPEN = 2, EV_RELEASE = 3 };

/* A pack's two descriptors: buffered (reads of pages already cached) and O_DIRECT (-1 where the filesystem refuses) */
typedef struct {
  int fd, dfd;
} pack_fds_t;

typedef struct image {
  uint64_t ino;
  char digest[65];
  uint64_t size;
  uint64_t mtime_ms;
  /* the manifest, once JavaScript gave it: count entries, offsets[count + 1] */
  uint32_t count;
  double *offsets;
  uint8_t *zero;
  uint8_t *hashes;
  struct image *next; /* in the session's list of every image seen */
} image_t;

typedef struct name {
  char *name;
  image_t *image;
} name_t;

/** A .stats snapshot taken at open, served until release. */
typedef struct stats_handle {
  uint64_t fh;
  uint8_t *data;
  size_t len;
  struct stats_handle *next;
} stats_handle_t;

/** A request held while JavaScript refreshes the image list; handled again by fuseResubmit. */
typedef struct pending {
  uint64_t unique;
  uint8_t *raw;
  size_t len;
  struct pending *next;
} pending_t;

typedef struct {
  uint8_t type;
  uint8_t pad[3];
  uint32_t len;
  uint64_t ino;
  uint64_t fh;
  uint64_t off;
  uint64_t micros;
} event_t;

/** Where a cached chunk is: pack file, offset of its bytes, length, their CRC32C; keyed by its hash's first 16 bytes.
 */
typedef struct {
  uint8_t key[16];
  uint32_t pack;
  uint32_t len;
  uint64_t off;
  uint32_t crc;
} chunk_loc_t;

/** Chunks the store said it holds: an open-addressing map, all-zero key = empty slot. */
typedef struct {
  chunk_loc_t *slots;
  size_t cap, used;
} chunk_map_t;

typedef struct session {
  int fd;
  int stop_fd;
  char *mountpoint;
  char *pack_dir;
  uint32_t max_readahead;
  int nworkers;
  int resend;    /* the kernel agreed to FUSE_HAS_RESEND at INIT */
  int inited;    /* INIT answered (or long done: an adopted connection) */
  char *ra_path; /* the mount's /sys/class/bdi/<dev>/read_ahead_kb, written once INIT is answered */
  uint32_t ra_kb;
  int started;
  pthread_t workers[MAX_WORKERS];
  volatile int stopping;
  int mounted;

  pthread_rwlock_t lock; /* images, names, manifests */
  image_t *images;
  name_t *names;
  size_t nnames;
  uint64_t stats_size;

  pthread_rwlock_t map_lock;
  chunk_map_t map;

  /* pack descriptors by id (fd 0: not opened yet, -1: not there); closed only under pack_lock's write lock */
  pthread_rwlock_t pack_lock;
  pthread_mutex_t pack_mu;
  pack_fds_t *pack_fds;
  size_t npacks;

  pthread_mutex_t mu; /* stats handles, events, handle counter */
  stats_handle_t *stats_handles;
  uint64_t next_fh;
  event_t *events;
  size_t nevents, cap_events;
  int events_notified;
  pending_t *pending;

  napi_threadsafe_function tsfn;
} session_t;

typedef struct {
  uint32_t kind;
  uint64_t unique;
  uint64_t ino;
  uint64_t fh;
  uint64_t off;
  uint32_t size;
} request_t;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* ---------- where cached chunks are ---------- */

static int key_empty(const uint8_t *k) {
  static const uint8_t zero[16];
  return memcmp(k, zero, 16) == 0;
}

static size_t key_slot(const chunk_map_t *m, const uint8_t *k) {
  uint64_t h;
  memcpy(&h, k, 8);
  return (size_t)(h & (m->cap - 1));
}

/** The location of the chunk whose hash starts with k; 0 when it is not known here. */
static int map_get(const chunk_map_t *m, const uint8_t *k, chunk_loc_t *out) {
  if (m->cap == 0) return 0;
  for (size_t i = key_slot(m, k);; i = (i + 1) & (m->cap - 1)) {
    const chunk_loc_t *slot = m->slots + i;
    if (key_empty(slot->key)) return 0;
    if (memcmp(slot->key, k, 16) == 0) {
      *out = *slot;
      return 1;
    }
  }
}

static void map_put_raw(chunk_map_t *m, const chunk_loc_t *e) {
  for (size_t i = key_slot(m, e->key);; i = (i + 1) & (m->cap - 1)) {
    chunk_loc_t *slot = m->slots + i;
    if (key_empty(slot->key)) {
      *slot = *e;
      m->used++;
      return;
    }
    if (memcmp(slot->key, e->key, 16) == 0) {
      *slot = *e; /* a newer location of the same chunk */
      return;
    }
  }
}

static int map_grow(chunk_map_t *m) {
  size_t ncap = m->cap == 0 ? 4096 : m->cap * 2;
  chunk_loc_t *old = m->slots;
  size_t ocap = m->cap;
  m->slots = calloc(ncap, sizeof *m->slots);
  if (!m->slots) {
    m->slots = old;
    return -1;
  }
  m->cap = ncap;
  m->used = 0;
  for (size_t i = 0; i < ocap; i++)
    if (!key_empty(old[i].key)) map_put_raw(m, old + i);
  free(old);
  return 0;
}

static void map_put(chunk_map_t *m, const chunk_loc_t *e) {
  if (key_empty(e->key)) return; /* the all-zero prefix marks an empty slot; such a chunk is served by JS */
  if ((m->used + 1) * 4 > m->cap * 3 && map_grow(m) != 0) return;
  map_put_raw(m, e);
}

static void map_remove(chunk_map_t *m, const uint8_t *k) {
  if (m->cap == 0 || key_empty(k)) return;
  size_t i = key_slot(m, k);
  for (;; i = (i + 1) & (m->cap - 1)) {
    chunk_loc_t *slot = m->slots + i;
    if (key_empty(slot->key)) return;
    if (memcmp(slot->key, k, 16) == 0) break;
  }
  /* backward-shift deletion keeps every probe chain intact */
  size_t j = i;
  for (;;) {
    j = (j + 1) & (m->cap - 1);
    chunk_loc_t *sj = m->slots + j;
    if (key_empty(sj->key)) break;
    size_t home = key_slot(m, sj->key);
    int between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (!between) {
      m->slots[i] = *sj;
      i = j;
    }
  }
  memset(m->slots + i, 0, sizeof *m->slots);
  m->used--;
}

/* ---------- pack files ---------- */

/**
 * The descriptors of pack `id`, opened on first use and kept; fd -1 when it cannot be opened (gone).
 * Called with pack_lock held for reading; descriptors are closed only under the write lock.
 */
static pack_fds_t pack_fd(session_t *s, uint32_t id) {
  pack_fds_t none = {-1, -1};
  pthread_mutex_lock(&s->pack_mu);
  if (id >= s->npacks) {
    size_t n = s->npacks ? s->npacks : 64;
    while (n <= id)
      n *= 2;
    pack_fds_t *grown = realloc(s->pack_fds, n * sizeof *grown);
    if (!grown) {
      pthread_mutex_unlock(&s->pack_mu);
      return none;
    }
    memset(grown + s->npacks, 0, (n - s->npacks) * sizeof *grown);
    s->pack_fds = grown;
    s->npacks = n;
  }
  pack_fds_t *slot = &s->pack_fds[id];
  if (slot->fd == 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%u.pack", s->pack_dir, id);
    /* -1 is kept too: a pack that is not there now is not tried again until JavaScript says so */
    slot->fd = open(path, O_RDONLY | O_CLOEXEC);
    slot->dfd = slot->fd < 0 ? -1 : open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
  }
  pack_fds_t fds = *slot;
  pthread_mutex_unlock(&s->pack_mu);
  return fds;
}

static void close_pack(pack_fds_t *p) {
  if (p->fd > 0) close(p->fd);
  if (p->dfd > 0) close(p->dfd);
  p->fd = p->dfd = 0;
}

/* ---------- replies ---------- */

static int reply(session_t *s, uint64_t unique, int err, const void *a, size_t alen, const void *b, size_t blen) {
  struct fuse_out_header h = {.len = (uint32_t)(sizeof h + alen + blen), .error = -err, .unique = unique};
  struct iovec iov[3] = {{&h, sizeof h}, {(void *)a, alen}, {(void *)b, blen}};
  int n = 1 + (alen > 0) + (blen > 0);
  if (alen == 0 && blen > 0) iov[1] = iov[2];
  ssize_t w = writev(s->fd, iov, n);
  /* ENOENT: the request was interrupted and is gone; anything else: the connection is */
  return w < 0 ? -errno : 0;
}

/** A reply of iov[1..n), iov[0] left for the header. */
static int reply_iov(session_t *s, uint64_t unique, struct iovec *iov, int n, size_t len) {
  struct fuse_out_header h = {.len = (uint32_t)(sizeof h + len), .error = 0, .unique = unique};
  iov[0] = (struct iovec){&h, sizeof h};
  ssize_t w = writev(s->fd, iov, n);
  return w < 0 ? -errno : 0;
}

static int reply_err(session_t *s, uint64_t unique, int err) {
  return reply(s, unique, err, NULL, 0, NULL, 0);
}

/* ---------- the namespace ---------- */

static image_t *image_by_ino(session_t *s, uint64_t ino) {
  for (image_t *im = s->images; im; im = im->next)
    if (im->ino == ino) return im;
  return NULL;
}

static image_t *image_by_digest(session_t *s, const char *digest) {
  for (image_t *im = s->images; im; im = im->next)
    if (strcmp(im->digest, digest) == 0) return im;
  return NULL;
}

static image_t *image_by_name(session_t *s, const char *name) {
  for (size_t i = 0; i < s->nnames; i++)
    if (strcmp(s->names[i].name, name) == 0) return s->names[i].image;
  return NULL;
}

/** Whether any name still shows this image (by-digest shows only listed images). */
static int image_listed(session_t *s, const image_t *im) {
  for (size_t i = 0; i < s->nnames; i++)
    if (s->names[i].image == im) return 1;
  return 0;
}

static uint64_t ino_of_digest(const char *hex) {
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = hex[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 0;
    v = (v << 4) | (uint64_t)d;
  }
  return v | (1ULL << 63);
}

static void fill_attr(session_t *s, uint64_t ino, const image_t *im, struct fuse_attr *a) {
  memset(a, 0, sizeof *a);
  a->ino = ino;
  a->blksize = 4096;
  if (ino == INO_ROOT || ino == INO_IMAGES || ino == INO_BYDIGEST) {
    a->mode = S_IFDIR | 0555;
    a->nlink = 2;
    uint64_t t = now_ms() / 1000;
    a->atime = a->mtime = a->ctime = t;
  } else if (ino == INO_STATS) {
    a->mode = S_IFREG | 0444;
    a->nlink = 1;
    a->size = s->stats_size;
    uint64_t t = now_ms();
    a->atime = a->mtime = a->ctime = t / 1000;
    a->atimensec = a->mtimensec = a->ctimensec = (uint32_t)((t % 1000) * 1000000);
  } else {
    a->mode = S_IFREG | 0444;
    a->nlink = 1;
    a->size = im->size;
    a->blocks = (im->size + 511) / 512;
    a->atime = a->mtime = a->ctime = im->mtime_ms / 1000;
    a->atimensec = a->mtimensec = a->ctimensec = (uint32_t)((im->mtime_ms % 1000) * 1000000);
  }
}

/** attr and entry validity: images never change; .stats always does; directories follow imports. */
static void validity(uint64_t ino, uint64_t *secs, uint32_t *nsecs) {
  *nsecs = 0;
  *secs = ino == INO_STATS ? 0 : 1;
}

static void to_js(session_t *s, uint32_t kind, struct fuse_in_header *in, uint64_t fh, uint64_t off, uint32_t size);

/**
 * A name not in the list, or a listing: the list may be behind the catalog (an import by another
 * process a moment ago), so JavaScript refreshes it first and hands the request back.
 */
static int hold_for_refresh(session_t *s, struct fuse_in_header *in, int resubmitted) {
  if (resubmitted) return 0;
  pending_t *p = calloc(1, sizeof *p);
  if (!p || !(p->raw = malloc(in->len))) {
    free(p);
    return 0;
  }
  memcpy(p->raw, in, in->len);
  p->len = in->len;
  p->unique = in->unique;
  pthread_mutex_lock(&s->mu);
  p->next = s->pending;
  s->pending = p;
  pthread_mutex_unlock(&s->mu);
  to_js(s, REQ_REFRESH, in, 0, 0, 0);
  return 1;
}

static void do_lookup(session_t *s, struct fuse_in_header *in, const char *name, int resubmitted) {
  uint64_t ino = 0;
  image_t *im = NULL;
  pthread_rwlock_rdlock(&s->lock);
  if (in->nodeid == INO_ROOT) {
    if (strcmp(name, "images") == 0)
      ino = INO_IMAGES;
    else if (strcmp(name, "by-digest") == 0)
      ino = INO_BYDIGEST;
    else if (strcmp(name, ".stats") == 0)
      ino = INO_STATS;
  } else if (in->nodeid == INO_IMAGES) {
    im = image_by_name(s, name);
  } else if (in->nodeid == INO_BYDIGEST) {
    im = image_by_digest(s, name);
    if (im && !image_listed(s, im)) im = NULL;
  } else if (in->nodeid != INO_STATS && image_by_ino(s, in->nodeid) == NULL) {
    pthread_rwlock_unlock(&s->lock);
    reply_err(s, in->unique, ENOENT);
    return;
  }
  if (im) ino = im->ino;
  if (ino == 0) {
    pthread_rwlock_unlock(&s->lock);
    if ((in->nodeid == INO_IMAGES || in->nodeid == INO_BYDIGEST) && hold_for_refresh(s, in, resubmitted)) return;
    reply_err(s, in->unique,
              in->nodeid == INO_ROOT || in->nodeid == INO_IMAGES || in->nodeid == INO_BYDIGEST ? ENOENT : ENOTDIR);
    return;
  }
  struct fuse_entry_out e;
  memset(&e, 0, sizeof e);
  e.nodeid = ino;
  validity(ino, &e.entry_valid, &e.entry_valid_nsec);
  validity(ino, &e.attr_valid, &e.attr_valid_nsec);
  fill_attr(s, ino, im, &e.attr);
  pthread_rwlock_unlock(&s->lock);
  reply(s, in->unique, 0, &e, sizeof e, NULL, 0);
}

static void do_getattr(session_t *s, struct fuse_in_header *in) {
  struct fuse_attr_out o;
  memset(&o, 0, sizeof o);
  pthread_rwlock_rdlock(&s->lock);
  image_t *im = NULL;
  if (in->nodeid > INO_STATS && !(im = image_by_ino(s, in->nodeid))) {
    pthread_rwlock_unlock(&s->lock);
    reply_err(s, in->unique, ENOENT);
    return;
  }
  validity(in->nodeid, &o.attr_valid, &o.attr_valid_nsec);
  fill_attr(s, in->nodeid, im, &o.attr);
  pthread_rwlock_unlock(&s->lock);
  reply(s, in->unique, 0, &o, sizeof o, NULL, 0);
}

static size_t add_dirent(uint8_t *buf, size_t cap, size_t at, uint64_t ino, uint64_t next, uint32_t type,
                         const char *name) {
  size_t nl = strlen(name);
  size_t rec = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + nl);
  if (at + rec > cap) return 0;
  struct fuse_dirent *d = (struct fuse_dirent *)(buf + at);
  d->ino = ino;
  d->off = next;
  d->namelen = (uint32_t)nl;
  d->type = type;
  memcpy(d->name, name, nl);
  memset(d->name + nl, 0, rec - FUSE_NAME_OFFSET - nl);
  return rec;
}

static void do_readdir(session_t *s, struct fuse_in_header *in, const struct fuse_read_in *r, uint8_t *buf,
                       int resubmitted) {
  if ((in->nodeid == INO_IMAGES || in->nodeid == INO_BYDIGEST) && r->offset == 0 &&
      hold_for_refresh(s, in, resubmitted))
    return;
  size_t cap = r->size < MAX_READ ? r->size : MAX_READ;
  size_t at = 0;
  uint64_t idx = 0, off = r->offset;
  pthread_rwlock_rdlock(&s->lock);
#define ENTRY(ino_, type_, name_)                                         \
  do {                                                                    \
    if (idx++ >= off) {                                                   \
      size_t n = add_dirent(buf, cap, at, (ino_), idx, (type_), (name_)); \
      if (n == 0) goto full;                                              \
      at += n;                                                            \
    }                                                                     \
  } while (0)
  if (in->nodeid == INO_ROOT) {
    ENTRY(INO_ROOT, S_IFDIR >> 12, ".");
    ENTRY(INO_ROOT, S_IFDIR >> 12, "..");
    ENTRY(INO_IMAGES, S_IFDIR >> 12, "images");
    ENTRY(INO_BYDIGEST, S_IFDIR >> 12, "by-digest");
    ENTRY(INO_STATS, S_IFREG >> 12, ".stats");
  } else if (in->nodeid == INO_IMAGES) {
    ENTRY(INO_IMAGES, S_IFDIR >> 12, ".");
    ENTRY(INO_ROOT, S_IFDIR >> 12, "..");
    for (size_t i = 0; i < s->nnames; i++)
      ENTRY(s->names[i].image->ino, S_IFREG >> 12, s->names[i].name);
  } else if (in->nodeid == INO_BYDIGEST) {
    ENTRY(INO_BYDIGEST, S_IFDIR >> 12, ".");
    ENTRY(INO_ROOT, S_IFDIR >> 12, "..");
    for (image_t *im = s->images; im; im = im->next)
      if (image_listed(s, im)) ENTRY(im->ino, S_IFREG >> 12, im->digest);
  } else {
    pthread_rwlock_unlock(&s->lock);
    reply_err(s, in->unique, ENOTDIR);
    return;
  }
#undef ENTRY
full:
  pthread_rwlock_unlock(&s->lock);
  reply(s, in->unique, 0, buf, at, NULL, 0);
}

/* ---------- events and requests for JavaScript ---------- */

static void push_event(session_t *s, uint8_t type, uint64_t ino, uint64_t fh, uint64_t off, uint32_t len,
                       uint64_t micros) {
  int notify = 0;
  pthread_mutex_lock(&s->mu);
  if (s->nevents == s->cap_events) {
    size_t ncap = s->cap_events == 0 ? 1024 : s->cap_events * 2;
    event_t *ne = ncap <= (1u << 22) ? realloc(s->events, ncap * sizeof *ne) : NULL;
    if (ne) {
      s->events = ne;
      s->cap_events = ncap;
    }
  }
  if (s->nevents < s->cap_events) {
    event_t *e = &s->events[s->nevents++];
    memset(e, 0, sizeof *e);
    e->type = type;
    e->ino = ino;
    e->fh = fh;
    e->off = off;
    e->len = len;
    e->micros = micros;
  } /* else: the queue is full (millions of events JavaScript has not drained): this one is not counted */
  if (!s->events_notified) {
    s->events_notified = 1;
    notify = 1;
  }
  pthread_mutex_unlock(&s->mu);
  if (notify) {
    request_t *q = calloc(1, sizeof *q);
    if (!q) return;
    q->kind = REQ_EVENTS;
    if (napi_call_threadsafe_function(s->tsfn, q, napi_tsfn_nonblocking) != napi_ok) free(q);
  }
}

static void to_js(session_t *s, uint32_t kind, struct fuse_in_header *in, uint64_t fh, uint64_t off, uint32_t size) {
  request_t *q = calloc(1, sizeof *q);
  if (!q) {
    reply_err(s, in->unique, ENOMEM);
    return;
  }
  q->kind = kind;
  q->unique = in->unique;
  q->ino = in->nodeid;
  q->fh = fh;
  q->off = off;
  q->size = size;
  if (napi_call_threadsafe_function(s->tsfn, q, napi_tsfn_blocking) != napi_ok) {
    free(q);
    reply_err(s, in->unique, EIO);
  }
}

static uint64_t new_fh(session_t *s) {
  pthread_mutex_lock(&s->mu);
  uint64_t fh = ++s->next_fh;
  pthread_mutex_unlock(&s->mu);
  return fh;
}

/** An image opened: the agent hears of it (usage sessions), the kernel keeps the image's pages. */
static void reply_image_open(session_t *s, uint64_t unique, uint64_t ino, uint64_t fh) {
  push_event(s, EV_OPEN, ino, fh, 0, 0, 0);
  struct fuse_open_out out = {.fh = fh, .open_flags = FOPEN_KEEP_CACHE};
  reply(s, unique, 0, &out, sizeof out, NULL, 0);
}

static void do_open(session_t *s, struct fuse_in_header *in, const struct fuse_open_in *o) {
  if ((o->flags & O_ACCMODE) != O_RDONLY) {
    reply_err(s, in->unique, EROFS);
    return;
  }
  if (in->nodeid == INO_STATS) {
    to_js(s, REQ_OPEN_STATS, in, new_fh(s), 0, 0);
    return;
  }
  if (in->nodeid <= INO_BYDIGEST) {
    reply_err(s, in->unique, EISDIR);
    return;
  }
  pthread_rwlock_rdlock(&s->lock);
  image_t *im = image_by_ino(s, in->nodeid);
  int loaded = im && im->offsets != NULL;
  pthread_rwlock_unlock(&s->lock);
  if (!im) {
    reply_err(s, in->unique, ENOENT);
    return;
  }
  uint64_t fh = new_fh(s);
  if (!loaded) {
    to_js(s, REQ_OPEN, in, fh, 0, 0);
    return;
  }
  reply_image_open(s, in->unique, in->nodeid, fh);
}

static void do_release(session_t *s, struct fuse_in_header *in, const struct fuse_release_in *r) {
  if (in->nodeid == INO_STATS) {
    pthread_mutex_lock(&s->mu);
    for (stats_handle_t **p = &s->stats_handles; *p; p = &(*p)->next) {
      if ((*p)->fh == r->fh) {
        stats_handle_t *h = *p;
        *p = h->next;
        free(h->data);
        free(h);
        break;
      }
    }
    pthread_mutex_unlock(&s->mu);
  } else if (in->nodeid > INO_STATS) {
    push_event(s, EV_RELEASE, in->nodeid, r->fh, 0, 0, 0);
  }
  reply_err(s, in->unique, 0);
}

static void read_stats(session_t *s, struct fuse_in_header *in, const struct fuse_read_in *r) {
  pthread_mutex_lock(&s->mu);
  stats_handle_t *h = s->stats_handles;
  while (h && h->fh != r->fh)
    h = h->next;
  if (!h) {
    /* opened before a takeover, under the previous agent: JavaScript snapshots it for this handle now */
    pthread_mutex_unlock(&s->mu);
    to_js(s, REQ_READ_STATS, in, r->fh, r->offset, r->size);
    return;
  }
  size_t from = r->offset < h->len ? (size_t)r->offset : h->len;
  size_t n = h->len - from < r->size ? h->len - from : r->size;
  /* the reply is written under the lock: release cannot free the snapshot meanwhile */
  reply(s, in->unique, 0, h->data + from, n, NULL, 0);
  pthread_mutex_unlock(&s->mu);
}

static size_t find_entry(const image_t *im, uint64_t pos) {
  size_t lo = 0, hi = im->count - 1;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    if (im->offsets[mid] <= (double)pos)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

/**
 * A worker's buffer for the records a read needs; NULL without memory. It is mapped in 2 MiB
 * steps, aligned to them, and asks for transparent huge pages: a direct read into 4 KiB pages takes
 * a disk segment per page, and a 1 MiB read then exceeds what one request of a virtio disk carries
 * (254 segments here), so the block layer splits it; into a huge page it is one segment.
 */
enum { REC_STEP = 2 << 20 };
static __thread uint8_t *tl_rec;
static __thread size_t tl_rec_cap;
static void free_record_buffer(void) {
  if (tl_rec) munmap(tl_rec, tl_rec_cap);
  tl_rec = NULL;
  tl_rec_cap = 0;
}
static uint8_t *record_buffer(size_t len) {
  if (len > tl_rec_cap) {
    size_t cap = (len + REC_STEP - 1) / REC_STEP * REC_STEP;
    uint8_t *m = mmap(NULL, cap + REC_STEP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
    /* keep the aligned middle: the head and tail it leaves go back */
    uint8_t *b = (uint8_t *)(((uintptr_t)m + REC_STEP - 1) / REC_STEP * REC_STEP);
    if (b > m) munmap(m, (size_t)(b - m));
    if (b + cap < m + cap + REC_STEP) munmap(b + cap, (size_t)(m + cap + REC_STEP - (b + cap)));
    madvise(b, cap, MADV_HUGEPAGE); /* advice: without huge pages the reads are split, not wrong */
    free_record_buffer();
    tl_rec = b;
    tl_rec_cap = cap;
  }
  return tl_rec;
}

/*
 * What a reply points at for the zero extents of an image: pages of zeros of their own, present and
 * locked. Not the never-written pages of a read-only mapping: those map the kernel's shared zero
 * page, which the kernel's copy of a reply can take only on its slow path, and that path gives up
 * when the agent is being killed, failing the reader's request with EIO (a kill -9 of the agent
 * must show readers only a pause).
 */
static const uint8_t *zeros;
static pthread_once_t zeros_once = PTHREAD_ONCE_INIT;
static void map_zeros(void) {
  void *z = mmap(NULL, MAX_READ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (z == MAP_FAILED) return;
  memset(z, 0, MAX_READ);        /* written: each page its own, not the shared zero page */
  if (mlock(z, MAX_READ) != 0) { /* without the privilege the pages are still present; they may only be swapped out */
  }
  mprotect(z, MAX_READ, PROT_READ);
  zeros = z;
}

static int chunk_known(session_t *s, const uint8_t *hash, chunk_loc_t *loc) {
  pthread_rwlock_rdlock(&s->map_lock);
  int known = map_get(&s->map, hash, loc);
  pthread_rwlock_unlock(&s->map_lock);
  return known;
}

/** A piece of a read: entry i's bytes [a, b) of the image, its chunk at loc. */
typedef struct {
  size_t i;
  uint64_t a, b, start;
  size_t len;
  chunk_loc_t loc;
  uint8_t *data; /* the chunk's bytes as read (in the worker's buffer) */
} piece_t;

enum { MAX_PIECES = 512, MAX_REPLY_IOV = 1000 };
/* Chunks of one pack this close are read in one go, the bytes between them with them. */
enum { RUN_GAP = 4096 };

static uint64_t align_down(uint64_t v) {
  return v & ~(uint64_t)(ALIGN - 1);
}
static uint64_t align_up(uint64_t v) {
  return align_down(v + ALIGN - 1);
}

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif

/** Whether the page cache holds every page of [start, end) of the file (cachestat(2), Linux 6.5; asks the disk
 * nothing). 0 where the kernel cannot say. */
static int all_cached(int fd, uint64_t start, uint64_t end) {
  struct {
    uint64_t off, len;
  } range = {align_down(start), align_up(end) - align_down(start)};
  struct {
    uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
  } st;
  if (syscall(__NR_cachestat, fd, &range, &st, 0) != 0) return 0;
  return st.nr_cache * 4096 >= range.len;
}

/**
 * Reads the bytes of pieces [from, to), close together in one pack, into dst (aligned; room for the
 * run's 4 KiB-aligned span) and points each piece at its bytes there. A span the page cache holds
 * whole is copied from it (cachestat(2) tells, without reading ahead); otherwise it is read with
 * O_DIRECT, straight from the disk into dst: the pack's pages would only double what the mount's
 * own page cache keeps of the image, and cost a page cache insertion each. -1 when the pack ends
 * early (cut back, or not what the store said): the agent sorts it out.
 */
static int read_run(session_t *s, piece_t *p, size_t from, size_t to, uint8_t *dst) {
  uint64_t start = p[from].loc.off, end = p[to - 1].loc.off + p[to - 1].len;
  uint64_t astart = align_down(start);
  pthread_rwlock_rdlock(&s->pack_lock);
  pack_fds_t fds = pack_fd(s, p[from].loc.pack);
  ssize_t got = -1;
  uint8_t *at = dst + (start - astart);
  if (fds.fd >= 0 && (fds.dfd < 0 || all_cached(fds.fd, start, end))) {
    do
      got = pread(fds.fd, at, (size_t)(end - start), (off_t)start);
    while (got < 0 && errno == EINTR);
  }
  if (fds.fd >= 0) {
    if (got != (ssize_t)(end - start) && fds.dfd >= 0) {
      /* the disk, directly: the whole aligned span (the file may end inside its last block) */
      size_t want = (size_t)(align_up(end) - astart);
      do
        got = pread(fds.dfd, dst, want, (off_t)astart);
      while (got < 0 && errno == EINTR);
      got = got >= (ssize_t)(end - astart) ? (ssize_t)(end - start) : -1;
    }
    if (got != (ssize_t)(end - start)) {
      do /* no direct reads here (the filesystem refuses them): a plain read, through the page cache */
        got = pread(fds.fd, at, (size_t)(end - start), (off_t)start);
      while (got < 0 && errno == EINTR);
    }
  }
  pthread_rwlock_unlock(&s->pack_lock);
  if (got != (ssize_t)(end - start)) return -1;
  for (size_t k = from; k < to; k++)
    p[k].data = at + (p[k].loc.off - start);
  return 0;
}

/**
 * The reply to a read of [pos, end) of the image, from the chunk store's packs: out[0..*n) point
 * at the bytes (the chunks read into the worker's buffer, and zeros), every chunk checked whole
 * against the CRC32C the store recorded before any of it is served: bytes that are not the
 * chunk's (bit rot, or a place another process has since evicted: a hole reads as zeros) never
 * are. -1 when any chunk of it cannot be served here (not known, unreadable, or not borne out by
 * its CRC): the agent reads the whole request then, and hashes what it must.
 */
static int read_pieces(session_t *s, const image_t *im, size_t first, uint64_t pos, uint64_t end, struct iovec *out,
                       int *n) {
  pthread_once(&zeros_once, map_zeros);
  if (!zeros) return -1;
  piece_t p[MAX_PIECES];
  size_t np = 0;
  for (size_t i = first; i < im->count && im->offsets[i] < (double)end; i++) {
    if (im->zero[i]) continue;
    if (np == MAX_PIECES) return -1;
    uint64_t start = (uint64_t)im->offsets[i], stop = (uint64_t)im->offsets[i + 1];
    piece_t *q = &p[np++];
    *q = (piece_t){.i = i,
                   .a = start > pos ? start : pos,
                   .b = stop < end ? stop : end,
                   .start = start,
                   .len = (size_t)(stop - start)};
    if (!chunk_known(s, im->hashes + i * 32, &q->loc) || q->loc.len != q->len) return -1;
  }
  /* runs of chunks that follow each other closely in one pack: one read each, into one buffer of their aligned spans */
  size_t runs[MAX_PIECES + 1], nr = 0, need = 0;
  for (size_t k = 0; k < np;) {
    size_t j = k + 1;
    while (j < np && p[j].loc.pack == p[k].loc.pack) {
      uint64_t prev_end = p[j - 1].loc.off + p[j - 1].len;
      if (p[j].loc.off < prev_end || p[j].loc.off - prev_end > RUN_GAP) break;
      j++;
    }
    runs[nr++] = k;
    need += align_up(p[j - 1].loc.off + p[j - 1].len) - align_down(p[k].loc.off);
    k = j;
  }
  runs[nr] = np;
  uint8_t *buf = np ? record_buffer(need) : NULL;
  if (np && !buf) return -1;
  for (size_t r = 0; r < nr; r++) {
    piece_t *f = &p[runs[r]], *l = &p[runs[r + 1] - 1];
    if (read_run(s, p, runs[r], runs[r + 1], buf) != 0) return -1;
    buf += align_up(l->loc.off + l->len) - align_down(f->loc.off);
  }
  for (size_t k = 0; k < np; k++)
    if (vmifs_crc32c(p[k].data, p[k].len) != p[k].loc.crc) return -1;
  /* the reply, in the image's order: zero extents (adjacent ones merged) and the pieces' bytes */
  int m = 0;
  size_t k = 0;
  for (size_t i = first; i < im->count && im->offsets[i] < (double)end; i++) {
    uint64_t start = (uint64_t)im->offsets[i], stop = (uint64_t)im->offsets[i + 1];
    uint64_t a = start > pos ? start : pos, b = stop < end ? stop : end;
    if (im->zero[i]) {
      if (m > 0 && out[m - 1].iov_base == zeros) {
        out[m - 1].iov_len += (size_t)(b - a);
        continue;
      }
      if (m == MAX_REPLY_IOV) return -1;
      out[m++] = (struct iovec){(void *)zeros, (size_t)(b - a)};
      continue;
    }
    if (m == MAX_REPLY_IOV) return -1;
    out[m++] = (struct iovec){p[k].data + (a - start), (size_t)(b - a)};
    k++;
  }
  *n = m;
  return 0;
}

static void do_read(session_t *s, struct fuse_in_header *in, const struct fuse_read_in *r) {
  if (in->nodeid == INO_STATS) {
    read_stats(s, in, r);
    return;
  }
  uint64_t t0 = mono_us();
  pthread_rwlock_rdlock(&s->lock);
  image_t *im = image_by_ino(s, in->nodeid);
  if (!im || !im->offsets) {
    pthread_rwlock_unlock(&s->lock);
    if (!im)
      reply_err(s, in->unique, EBADF);
    else
      to_js(s, REQ_READ, in, r->fh, r->offset, r->size);
    return;
  }
  uint64_t pos = r->offset;
  if (pos >= im->size || r->size == 0) {
    pthread_rwlock_unlock(&s->lock);
    push_event(s, EV_READ, im->ino, r->fh, pos, 0, mono_us() - t0);
    reply(s, in->unique, 0, NULL, 0, NULL, 0);
    return;
  }
  uint32_t size = r->size < MAX_READ ? r->size : MAX_READ;
  uint64_t end = pos + size < im->size ? pos + size : im->size;
  size_t first = find_entry(im, pos);
  struct iovec iov[1 + MAX_REPLY_IOV];
  int n = 0;
  int ok = read_pieces(s, im, first, pos, end, iov + 1, &n) == 0;
  uint64_t ino = im->ino;
  pthread_rwlock_unlock(&s->lock);
  if (!ok) {
    /* a chunk this side cannot serve: the agent reads (and fetches) the whole request */
    to_js(s, REQ_READ, in, r->fh, r->offset, r->size);
    return;
  }
  /* the event is queued before the reply, so a reader that got its bytes finds the read counted */
  push_event(s, EV_READ, ino, r->fh, pos, (uint32_t)(end - pos), mono_us() - t0);
  reply_iov(s, in->unique, iov, 1 + n, (size_t)(end - pos));
}

/** Writes the mount's read-ahead to its bdi, if asked and INIT is done; called with mu held. */
static void apply_readahead(session_t *s) {
  if (!s->inited || !s->ra_path) return;
  int fd = open(s->ra_path, O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    char v[16];
    int n = snprintf(v, sizeof v, "%u\n", s->ra_kb);
    if (write(fd, v, (size_t)n) != n) { /* not root: the kernel's read-ahead stays */
    }
    close(fd);
  }
  free(s->ra_path);
  s->ra_path = NULL;
}

static void do_init(session_t *s, struct fuse_in_header *in, const struct fuse_init_in *i) {
  struct fuse_init_out o;
  memset(&o, 0, sizeof o);
  o.major = FUSE_KERNEL_VERSION;
  o.minor = i->minor < OUR_MINOR ? i->minor : OUR_MINOR;
  if (i->major != FUSE_KERNEL_VERSION) {
    reply(s, in->unique, EPROTO, &o, sizeof o, NULL, 0);
    return;
  }
  o.max_readahead = s->max_readahead < i->max_readahead ? s->max_readahead : i->max_readahead;
  uint32_t want = FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_ASYNC_DIO;
  o.flags = i->flags & want;
  if ((i->flags & FUSE_INIT_EXT) && (i->flags2 & VMIFS_HAS_RESEND_FLAGS2)) {
    o.flags |= FUSE_INIT_EXT;
    o.flags2 = VMIFS_HAS_RESEND_FLAGS2;
    s->resend = 1;
  }
  o.max_background = 64;
  o.congestion_threshold = 48;
  o.max_write = 128 * 1024;
  o.time_gran = 1;
  o.max_pages = MAX_PAGES;
  reply(s, in->unique, 0, &o, sizeof o, NULL, 0);
  /* the kernel sets the mount's read-ahead from this reply (at most 128 KiB): only now can it be raised */
  pthread_mutex_lock(&s->mu);
  s->inited = 1;
  apply_readahead(s);
  pthread_mutex_unlock(&s->mu);
}

static void handle(session_t *s, uint8_t *req, size_t n, uint8_t *buf, int resubmitted) {
  if (n < sizeof(struct fuse_in_header)) return;
  struct fuse_in_header *in = (struct fuse_in_header *)req;
  void *arg = req + sizeof *in;
  switch (in->opcode) {
  case FUSE_INIT:
    do_init(s, in, arg);
    break;
  case FUSE_LOOKUP:
    do_lookup(s, in, arg, resubmitted);
    break;
  case FUSE_FORGET:
  case FUSE_BATCH_FORGET:
  case FUSE_INTERRUPT:
    break; /* no answer */
  case FUSE_GETATTR:
    do_getattr(s, in);
    break;
  case FUSE_OPEN:
    do_open(s, in, arg);
    break;
  case FUSE_READ:
    do_read(s, in, arg);
    break;
  case FUSE_RELEASE:
    do_release(s, in, arg);
    break;
  case FUSE_OPENDIR: {
    struct fuse_open_out o = {.fh = 0, .open_flags = 0};
    if (in->nodeid != INO_ROOT && in->nodeid != INO_IMAGES && in->nodeid != INO_BYDIGEST)
      reply_err(s, in->unique, ENOTDIR);
    else
      reply(s, in->unique, 0, &o, sizeof o, NULL, 0);
    break;
  }
  case FUSE_READDIR:
    do_readdir(s, in, arg, buf, resubmitted);
    break;
  case FUSE_RELEASEDIR:
  case FUSE_FLUSH:
  case FUSE_FSYNC:
  case FUSE_FSYNCDIR:
    reply_err(s, in->unique, 0);
    break;
  case FUSE_ACCESS: {
    const struct fuse_access_in *a = arg;
    reply_err(s, in->unique, (a->mask & W_OK) ? EROFS : 0);
    break;
  }
  case FUSE_STATFS: {
    struct fuse_statfs_out o;
    memset(&o, 0, sizeof o);
    o.st.bsize = 4096;
    o.st.frsize = 4096;
    o.st.namelen = 255;
    reply(s, in->unique, 0, &o, sizeof o, NULL, 0);
    break;
  }
  case FUSE_SETATTR:
  case FUSE_MKNOD:
  case FUSE_MKDIR:
  case FUSE_UNLINK:
  case FUSE_RMDIR:
  case FUSE_RENAME:
  case FUSE_RENAME2:
  case FUSE_LINK:
  case FUSE_SYMLINK:
  case FUSE_WRITE:
  case FUSE_SETXATTR:
  case FUSE_REMOVEXATTR:
  case FUSE_CREATE:
  case FUSE_FALLOCATE:
  case FUSE_COPY_FILE_RANGE:
    reply_err(s, in->unique, EROFS);
    break;
  case FUSE_DESTROY:
    reply_err(s, in->unique, 0);
    break;
  default:
    reply_err(s, in->unique, ENOSYS);
  }
}

static void *worker(void *p) {
  session_t *s = p;
  size_t cap = MAX_READ + 4096;
  uint8_t *req = malloc(cap);
  uint8_t *buf = malloc(MAX_READ);
  if (!req || !buf) goto out;
  struct pollfd fds[2] = {{.fd = s->fd, .events = POLLIN}, {.fd = s->stop_fd, .events = POLLIN}};
  while (!s->stopping) {
    int pr = poll(fds, 2, -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents) break;
    if (!(fds[0].revents & POLLIN)) {
      if (fds[0].revents & (POLLERR | POLLHUP)) break;
      continue;
    }
    ssize_t n = read(s->fd, req, cap);
    if (n < 0) {
      /* EAGAIN: another worker took it; ENOENT: interrupted before we read it */
      if (errno == EINTR || errno == EAGAIN || errno == ENOENT) continue;
      break; /* ENODEV: unmounted and every handle gone */
    }
    handle(s, req, (size_t)n, buf, 0);
  }
out:
  free(req);
  free(buf);
  free_record_buffer();
  return NULL;
}

/* ---------- N-API ---------- */

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  request_t *q = data;
  session_t *s = context;
  if (env == NULL || js_cb == NULL) {
    free(q);
    return;
  }
  if (q->kind == REQ_EVENTS) {
    pthread_mutex_lock(&s->mu);
    s->events_notified = 0;
    pthread_mutex_unlock(&s->mu);
  }
  napi_value argv[6], undef;
  napi_create_uint32(env, q->kind, &argv[0]);
  napi_create_bigint_uint64(env, q->unique, &argv[1]);
  napi_create_bigint_uint64(env, q->ino, &argv[2]);
  napi_create_double(env, (double)q->fh, &argv[3]);
  napi_create_double(env, (double)q->off, &argv[4]);
  napi_create_uint32(env, q->size, &argv[5]);
  napi_get_undefined(env, &undef);
  free(q);
  napi_call_function(env, undef, js_cb, 6, argv, NULL);
}

static session_t *session_of(napi_env env, napi_value v) {
  session_t *s = NULL;
  if (napi_get_value_external(env, v, (void **)&s) != napi_ok || !s) {
    napi_throw_type_error(env, "VMIFS_NATIVE", "not a FUSE session");
    return NULL;
  }
  return s;
}

/** The call's first n arguments into argv, and the session it names first; NULL with an exception pending. */
static session_t *session_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, "VMIFS_NATIVE", "napi_get_cb_info failed");
    return NULL;
  }
  return session_of(env, argv[0]);
}

static char *get_string(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *out = malloc(len + 1);
  if (!out) return NULL;
  napi_get_value_string_utf8(env, v, out, len + 1, &len);
  return out;
}

/** The session around a /dev/fuse descriptor; its workers start with fuseStart. */
static napi_value start_session(napi_env env, int fd, char *mnt, char *packs, napi_value opts, napi_value cb,
                                int mounted) {
  uint32_t readahead = 128 * 1024, nworkers = 2;
  napi_value v;
  if (napi_get_named_property(env, opts, "maxReadahead", &v) == napi_ok) napi_get_value_uint32(env, v, &readahead);
  if (napi_get_named_property(env, opts, "workers", &v) == napi_ok) napi_get_value_uint32(env, v, &nworkers);
  if (nworkers < 1) nworkers = 1;
  if (nworkers > MAX_WORKERS) nworkers = MAX_WORKERS;
  session_t *s = calloc(1, sizeof *s);
  if (!s) return throw_errno(env, "fuse session", ENOMEM);
  s->fd = fd;
  /* non-blocking: every worker polls, and the one that loses the race for a request must get
   * EAGAIN rather than sleep in read() — a worker asleep there is never joined when the workers
   * stop (a takeover waited on one for good under load). Shared with the holder and successors,
   * which want it so too. */
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  s->mountpoint = mnt;
  s->pack_dir = packs;
  s->max_readahead = readahead;
  s->stats_size = 65536;
  s->mounted = mounted;
  pthread_rwlock_init(&s->lock, NULL);
  pthread_rwlock_init(&s->map_lock, NULL);
  pthread_rwlock_init(&s->pack_lock, NULL);
  pthread_mutex_init(&s->pack_mu, NULL);
  pthread_mutex_init(&s->mu, NULL);
  s->stop_fd = eventfd(0, EFD_CLOEXEC);
  napi_value name;
  napi_create_string_utf8(env, "vmifs-fuse", NAPI_AUTO_LENGTH, &name);
  CHECK(napi_create_threadsafe_function(env, cb, NULL, name, 0, 1, NULL, NULL, s, call_js, &s->tsfn));
  /* the mount does not keep the process alive by itself: the agent unmounts before it exits */
  napi_unref_threadsafe_function(env, s->tsfn);
  s->nworkers = (int)nworkers;
  napi_value out;
  CHECK(napi_create_external(env, s, NULL, NULL, &out));
  return out;
}

/**
 * fuseStart(session, resend): start the workers, once JavaScript has given the image list (an
 * adopted connection's kernel already knows inodes and may ask about them at once). resend: ask
 * the kernel to queue again every request the previous daemon read and never answered.
 */
static napi_value FuseStart(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  session_t *s = session_args(env, info, 2, argv);
  if (!s || s->fd < 0 || s->started) return NULL;
  bool resend = false;
  napi_get_value_bool(env, argv[1], &resend);
  s->started = 1;
  for (int i = 0; i < s->nworkers; i++)
    pthread_create(&s->workers[i], NULL, worker, s);
  if (resend) {
    struct fuse_out_header h = {.len = sizeof h, .error = VMIFS_NOTIFY_RESEND, .unique = 0};
    /* EINVAL on a kernel without resend: then nothing that was pending can be given back */
    if (write(s->fd, &h, sizeof h) < 0) {
    }
  }
  return NULL;
}

/** fuseMount(mountpoint, packDir, { allowOther, maxReadahead, workers }, onRequest) -> session */
static napi_value FuseMount(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *mnt = get_string(env, argv[0]);
  char *packs = get_string(env, argv[1]);
  bool allow_other = false;
  napi_value v;
  if (napi_get_named_property(env, argv[2], "allowOther", &v) == napi_ok) napi_get_value_bool(env, v, &allow_other);
  if (!mnt || !packs) return throw_errno(env, "fuseMount", ENOMEM);
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open /dev/fuse", errno);
  char opts[256];
  snprintf(opts, sizeof opts, "fd=%d,rootmode=40000,user_id=%u,group_id=%u,default_permissions%s", fd, getuid(),
           getgid(), allow_other ? ",allow_other" : "");
  if (mount("vmifs", mnt, "fuse.vmifs", MS_NOSUID | MS_NODEV | MS_RDONLY, opts) != 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "mount", e);
  }
  return start_session(env, fd, mnt, packs, argv[2], argv[3], 1);
}

/** fuseAdopt(fd, mountpoint, packDir, opts, onRequest) -> session: a live connection (its INIT long done). */
static napi_value FuseAdopt(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  char *mnt = get_string(env, argv[1]);
  char *packs = get_string(env, argv[2]);
  if (!mnt || !packs) return throw_errno(env, "fuseAdopt", ENOMEM);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  napi_value out = start_session(env, fd, mnt, packs, argv[3], argv[4], 1);
  session_t *s = out ? session_of(env, out) : NULL;
  /* file handles the kernel got from the previous agent stay in use: new ones start far above */
  if (s) s->next_fh = (now_ms() / 1000) << 20; /* below 2^53: JavaScript holds fh as a number */
  if (s) s->inited = 1;
  return out;
}

/** stop the workers (each finishes the request in hand) */
static void stop_workers(session_t *s) {
  s->stopping = 1;
  if (!s->started) return;
  uint64_t one = 1;
  if (write(s->stop_fd, &one, sizeof one) < 0) { /* the workers also stop on the closed connection */
  }
  for (int i = 0; i < s->nworkers; i++)
    pthread_join(s->workers[i], NULL);
}

/** Stops the workers if they still run, closes this descriptor, lets go of JavaScript. */
static void close_session(session_t *s) {
  if (!s->stopping) stop_workers(s);
  s->mounted = 0;
  close(s->fd);
  s->fd = -1;
  pthread_rwlock_wrlock(&s->pack_lock);
  for (size_t i = 0; i < s->npacks; i++)
    close_pack(&s->pack_fds[i]);
  free(s->pack_fds);
  s->pack_fds = NULL;
  s->npacks = 0;
  pthread_rwlock_unlock(&s->pack_lock);
  napi_release_threadsafe_function(s->tsfn, napi_tsfn_abort);
}

/** fuseStopWorkers(session): stop reading requests (each worker finishes the one in hand). */
static napi_value FuseStopWorkers(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  session_t *s = session_args(env, info, 1, argv);
  if (!s || s->stopping) return NULL;
  stop_workers(s);
  return NULL;
}

/**
 * fuseDetach(session): hand over — after fuseStopWorkers and once every request handed to
 * JavaScript is answered, close this descriptor, leaving the mount and the connection (held by
 * the holder) to the successor.
 */
static napi_value FuseDetach(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  session_t *s = session_args(env, info, 1, argv);
  if (!s || s->fd < 0) return NULL;
  close_session(s);
  return NULL;
}

/** fuseFd(session) -> the /dev/fuse descriptor (for the holder to inherit) */
static napi_value FuseFd(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  session_t *s = session_args(env, info, 1, argv);
  if (!s) return NULL;
  CHECK(napi_create_int32(env, s->fd, &out));
  return out;
}

static int holder_connect(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(addr.sun_path, path);
  int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0) return -1;
  struct timeval tv = {.tv_sec = 5};
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(c, (struct sockaddr *)&addr, sizeof addr) != 0) {
    int e = errno;
    close(c);
    errno = e;
    return -1;
  }
  return c;
}

/** holderTake(socketPath) -> the connection's descriptor, from the holder (throws with errno) */
static napi_value HolderTake(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *path = get_string(env, argv[0]);
  if (!path) return throw_errno(env, "holderTake", ENOMEM);
  int c = holder_connect(path);
  free(path);
  if (c < 0) return throw_errno(env, "holder", errno);
  char cmd = 'F', byte = 0;
  if (write(c, &cmd, 1) != 1) {
    int e = errno;
    close(c);
    return throw_errno(env, "holder", e);
  }
  struct iovec iov = {&byte, 1};
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n = recvmsg(c, &msg, MSG_CMSG_CLOEXEC);
  int e = errno;
  close(c);
  struct cmsghdr *cm = n == 1 ? CMSG_FIRSTHDR(&msg) : NULL;
  if (!cm || cm->cmsg_type != SCM_RIGHTS) return throw_errno(env, "holder sent no descriptor", n < 0 ? e : EPROTO);
  int fd;
  memcpy(&fd, CMSG_DATA(cm), sizeof fd);
  napi_value out;
  CHECK(napi_create_int32(env, fd, &out));
  return out;
}

/** holderQuit(socketPath): the holder exits (the agent stops with no successor); false if none answered */
static napi_value HolderQuit(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char *path = get_string(env, argv[0]);
  if (!path) return throw_errno(env, "holderQuit", ENOMEM);
  int c = holder_connect(path);
  free(path);
  char cmd = 'Q';
  int ok = c >= 0 && write(c, &cmd, 1) == 1;
  if (c >= 0) close(c);
  CHECK(napi_get_boolean(env, ok, &out));
  return out;
}

/** fuseUnmount(session): detach the mount, stop the workers, close the connection. */
static napi_value FuseUnmount(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  session_t *s = session_args(env, info, 1, argv);
  if (!s || s->fd < 0) return NULL;
  int err = 0;
  if (s->mounted && umount2(s->mountpoint, MNT_DETACH) != 0) err = errno;
  close_session(s);
  if (err) return throw_errno(env, "umount", err);
  return NULL;
}

/** setImages(session, names[], digests[], sizes[], mtimesMs[], statsSize) */
static napi_value SetImages(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  session_t *s = session_args(env, info, 6, argv);
  if (!s) return NULL;
  uint32_t n;
  CHECK(napi_get_array_length(env, argv[1], &n));
  name_t *names = calloc(n ? n : 1, sizeof *names);
  pthread_rwlock_wrlock(&s->lock);
  for (uint32_t i = 0; i < n; i++) {
    napi_value nv, dv, sv, tv;
    napi_get_element(env, argv[1], i, &nv);
    napi_get_element(env, argv[2], i, &dv);
    napi_get_element(env, argv[3], i, &sv);
    napi_get_element(env, argv[4], i, &tv);
    char digest[65] = {0};
    size_t dl;
    napi_get_value_string_utf8(env, dv, digest, sizeof digest, &dl);
    image_t *im = image_by_digest(s, digest);
    if (!im) {
      im = calloc(1, sizeof *im);
      memcpy(im->digest, digest, sizeof digest);
      im->ino = ino_of_digest(digest);
      double size, mtime;
      napi_get_value_double(env, sv, &size);
      napi_get_value_double(env, tv, &mtime);
      im->size = (uint64_t)size;
      im->mtime_ms = (uint64_t)mtime;
      im->next = s->images;
      s->images = im;
    }
    names[i].name = get_string(env, nv);
    names[i].image = im;
  }
  name_t *old = s->names;
  size_t nold = s->nnames;
  s->names = names;
  s->nnames = n;
  double stats_size;
  if (napi_get_value_double(env, argv[5], &stats_size) == napi_ok) s->stats_size = (uint64_t)stats_size;
  pthread_rwlock_unlock(&s->lock);
  for (size_t i = 0; i < nold; i++)
    free(old[i].name);
  free(old);
  return NULL;
}

/** setManifest(session, digest, offsets: Float64Array (count + 1), zero: Uint8Array, hashes: Buffer) */
static napi_value SetManifest(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  session_t *s = session_args(env, info, 5, argv);
  if (!s) return NULL;
  char digest[65] = {0};
  size_t dl;
  CHECK(napi_get_value_string_utf8(env, argv[1], digest, sizeof digest, &dl));
  napi_typedarray_type t;
  size_t noff, nzero, nh;
  void *off, *zero, *hashes;
  CHECK(napi_get_typedarray_info(env, argv[2], &t, &noff, &off, NULL, NULL));
  CHECK(napi_get_typedarray_info(env, argv[3], &t, &nzero, &zero, NULL, NULL));
  CHECK(napi_get_buffer_info(env, argv[4], &hashes, &nh));
  if (noff != nzero + 1 || nh != nzero * 32 || nzero == 0) {
    napi_throw_range_error(env, "VMIFS_NATIVE", "manifest arrays do not agree");
    return NULL;
  }
  double *o = malloc(noff * sizeof *o);
  uint8_t *z = malloc(nzero), *h = malloc(nh);
  if (!o || !z || !h) return throw_errno(env, "setManifest", ENOMEM);
  memcpy(o, off, noff * sizeof *o);
  memcpy(z, zero, nzero);
  memcpy(h, hashes, nh);
  pthread_rwlock_wrlock(&s->lock);
  image_t *im = image_by_digest(s, digest);
  if (im && !im->offsets) {
    im->count = (uint32_t)nzero;
    im->offsets = o;
    im->zero = z;
    im->hashes = h;
    o = NULL;
    z = h = NULL;
  }
  pthread_rwlock_unlock(&s->lock);
  free(o);
  free(z);
  free(h);
  return NULL;
}

/** A location record from JavaScript: hash[32], pack u32, length u32, offset u64, CRC32C u32, 4 zero bytes
 * (little-endian). */
enum { LOC_RECORD = 56 };

/** markCached(session, records: Buffer of LOC_RECORD-byte locations): the store holds these chunks there */
static napi_value MarkCached(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  session_t *s = session_args(env, info, 2, argv);
  if (!s) return NULL;
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  pthread_rwlock_wrlock(&s->map_lock);
  for (size_t i = 0; i + LOC_RECORD <= len; i += LOC_RECORD) {
    const uint8_t *r = (const uint8_t *)data + i;
    chunk_loc_t e;
    memcpy(e.key, r, 16);
    memcpy(&e.pack, r + 32, 4);
    memcpy(&e.len, r + 36, 4);
    memcpy(&e.off, r + 40, 8);
    memcpy(&e.crc, r + 48, 4);
    map_put(&s->map, &e);
  }
  pthread_rwlock_unlock(&s->map_lock);
  return NULL;
}

/** markUncached(session, hashes: Buffer of 32-byte hashes): evicted, dropped or gone; reads of it go to the agent */
static napi_value MarkUncached(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  session_t *s = session_args(env, info, 2, argv);
  if (!s) return NULL;
  void *data;
  size_t len;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  pthread_rwlock_wrlock(&s->map_lock);
  for (size_t i = 0; i + 32 <= len; i += 32)
    map_remove(&s->map, (const uint8_t *)data + i);
  pthread_rwlock_unlock(&s->map_lock);
  return NULL;
}

/** fusePacksChanged(session, ids: number[]): these packs were deleted or created; open them afresh */
static napi_value PacksChanged(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  session_t *s = session_args(env, info, 2, argv);
  if (!s) return NULL;
  uint32_t n;
  CHECK(napi_get_array_length(env, argv[1], &n));
  /* the write lock waits for every read in progress on a pack descriptor */
  pthread_rwlock_wrlock(&s->pack_lock);
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    uint32_t id;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok || napi_get_value_uint32(env, v, &id) != napi_ok) continue;
    if (id < s->npacks) close_pack(&s->pack_fds[id]);
  }
  pthread_rwlock_unlock(&s->pack_lock);
  return NULL;
}

/** reply(session, unique: bigint, errno) — an error, or an empty success (open of a loaded image). */
static napi_value Reply(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  session_t *s = session_args(env, info, 3, argv);
  if (!s || s->fd < 0) return NULL;
  uint64_t unique;
  bool lossless;
  int32_t err;
  CHECK(napi_get_value_bigint_uint64(env, argv[1], &unique, &lossless));
  CHECK(napi_get_value_int32(env, argv[2], &err));
  reply_err(s, unique, err);
  return NULL;
}

/** replyData(session, unique, buffer, length) — the answer to a read handed to the agent. */
static napi_value ReplyData(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  session_t *s = session_args(env, info, 4, argv);
  if (!s || s->fd < 0) return NULL;
  uint64_t unique;
  bool lossless;
  void *data;
  size_t len;
  uint32_t n;
  CHECK(napi_get_value_bigint_uint64(env, argv[1], &unique, &lossless));
  CHECK(napi_get_buffer_info(env, argv[2], &data, &len));
  CHECK(napi_get_value_uint32(env, argv[3], &n));
  reply(s, unique, 0, data, n < len ? n : len, NULL, 0);
  return NULL;
}

/** replyOpen(session, unique, ino: bigint, fh) — the open of an image whose manifest is now loaded. */
static napi_value ReplyOpen(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  session_t *s = session_args(env, info, 4, argv);
  if (!s || s->fd < 0) return NULL;
  uint64_t unique, ino;
  bool lossless;
  double fh;
  CHECK(napi_get_value_bigint_uint64(env, argv[1], &unique, &lossless));
  CHECK(napi_get_value_bigint_uint64(env, argv[2], &ino, &lossless));
  CHECK(napi_get_value_double(env, argv[3], &fh));
  reply_image_open(s, unique, ino, (uint64_t)fh);
  return NULL;
}

/**
 * replyOpenStats(session, unique, fh, snapshot: Buffer[, off, size]) — .stats as of this open,
 * until its release. With off and size the request is a read of a handle this session has not
 * seen (opened under the agent it took over from): the snapshot is kept for it and the read
 * answered from it.
 */
static napi_value ReplyOpenStats(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  session_t *s = session_args(env, info, 6, argv);
  if (!s || s->fd < 0) return NULL;
  uint64_t unique;
  bool lossless;
  double fh;
  void *data;
  size_t len;
  CHECK(napi_get_value_bigint_uint64(env, argv[1], &unique, &lossless));
  CHECK(napi_get_value_double(env, argv[2], &fh));
  CHECK(napi_get_buffer_info(env, argv[3], &data, &len));
  stats_handle_t *h = calloc(1, sizeof *h);
  uint8_t *copy = malloc(len ? len : 1);
  if (!h || !copy) {
    free(h);
    free(copy);
    reply_err(s, unique, ENOMEM);
    return NULL;
  }
  memcpy(copy, data, len);
  h->fh = (uint64_t)fh;
  h->data = copy;
  h->len = len;
  napi_valuetype t;
  double off = 0, size = 0;
  int is_read = napi_typeof(env, argv[4], &t) == napi_ok && t == napi_number;
  if (is_read) {
    CHECK(napi_get_value_double(env, argv[4], &off));
    CHECK(napi_get_value_double(env, argv[5], &size));
  }
  pthread_mutex_lock(&s->mu);
  h->next = s->stats_handles;
  s->stats_handles = h;
  if (len > s->stats_size) s->stats_size = len;
  if (is_read) {
    size_t from = off < (double)len ? (size_t)off : len;
    size_t n = len - from < (size_t)size ? len - from : (size_t)size;
    reply(s, unique, 0, copy + from, n, NULL, 0);
  }
  pthread_mutex_unlock(&s->mu);
  if (!is_read) {
    struct fuse_open_out out = {.fh = (uint64_t)fh, .open_flags = FOPEN_DIRECT_IO};
    reply(s, unique, 0, &out, sizeof out, NULL, 0);
  }
  return NULL;
}

/**
 * fuseSetReadahead(session, path, kb): the mount's read-ahead (its bdi's read_ahead_kb file),
 * written as soon as INIT is answered (the kernel resets it then), or now on a live connection.
 */
static napi_value SetReadahead(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  session_t *s = session_args(env, info, 3, argv);
  if (!s) return NULL;
  char *path = get_string(env, argv[1]);
  uint32_t kb;
  CHECK(napi_get_value_uint32(env, argv[2], &kb));
  pthread_mutex_lock(&s->mu);
  free(s->ra_path);
  s->ra_path = path;
  s->ra_kb = kb;
  apply_readahead(s);
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/** fuseResubmit(session, unique): handle again a request held for a refresh of the image list. */
static napi_value Resubmit(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  session_t *s = session_args(env, info, 2, argv);
  if (!s) return NULL;
  uint64_t unique;
  bool lossless;
  CHECK(napi_get_value_bigint_uint64(env, argv[1], &unique, &lossless));
  pthread_mutex_lock(&s->mu);
  pending_t *p = NULL;
  for (pending_t **pp = &s->pending; *pp; pp = &(*pp)->next) {
    if ((*pp)->unique == unique) {
      p = *pp;
      *pp = p->next;
      break;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (!p) return NULL;
  uint8_t *buf = s->fd >= 0 ? malloc(MAX_READ) : NULL;
  if (buf) handle(s, p->raw, p->len, buf, 1);
  free(buf);
  free(p->raw);
  free(p);
  return NULL;
}

/** drainEvents(session) -> Buffer of 40-byte events {type u8, pad, len u32, ino u64, fh u64, off u64, micros u64} */
static napi_value DrainEvents(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  session_t *s = session_args(env, info, 1, argv);
  if (!s) return NULL;
  pthread_mutex_lock(&s->mu);
  size_t n = s->nevents;
  napi_value out;
  void *dst;
  napi_status st = napi_create_buffer(env, n * sizeof(event_t), &dst, &out);
  if (st == napi_ok && n > 0) memcpy(dst, s->events, n * sizeof(event_t));
  s->nevents = 0;
  pthread_mutex_unlock(&s->mu);
  if (st != napi_ok) return throw_errno(env, "drainEvents", ENOMEM);
  return out;
}

void vmifs_fuse_register(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"fuseMount", NULL, FuseMount, NULL, NULL, NULL, napi_default, NULL},
      {"fuseUnmount", NULL, FuseUnmount, NULL, NULL, NULL, napi_default, NULL},
      {"fuseAdopt", NULL, FuseAdopt, NULL, NULL, NULL, napi_default, NULL},
      {"fuseStart", NULL, FuseStart, NULL, NULL, NULL, napi_default, NULL},
      {"fuseStopWorkers", NULL, FuseStopWorkers, NULL, NULL, NULL, napi_default, NULL},
      {"fuseDetach", NULL, FuseDetach, NULL, NULL, NULL, napi_default, NULL},
      {"fuseFd", NULL, FuseFd, NULL, NULL, NULL, napi_default, NULL},
      {"holderTake", NULL, HolderTake, NULL, NULL, NULL, napi_default, NULL},
      {"holderQuit", NULL, HolderQuit, NULL, NULL, NULL, napi_default, NULL},
      {"fuseSetImages", NULL, SetImages, NULL, NULL, NULL, napi_default, NULL},
      {"fuseSetManifest", NULL, SetManifest, NULL, NULL, NULL, napi_default, NULL},
      {"fuseMarkCached", NULL, MarkCached, NULL, NULL, NULL, napi_default, NULL},
      {"fuseMarkUncached", NULL, MarkUncached, NULL, NULL, NULL, napi_default, NULL},
      {"fusePacksChanged", NULL, PacksChanged, NULL, NULL, NULL, napi_default, NULL},
      {"fuseReply", NULL, Reply, NULL, NULL, NULL, napi_default, NULL},
      {"fuseReplyData", NULL, ReplyData, NULL, NULL, NULL, napi_default, NULL},
      {"fuseReplyOpen", NULL, ReplyOpen, NULL, NULL, NULL, napi_default, NULL},
      {"fuseReplyOpenStats", NULL, ReplyOpenStats, NULL, NULL, NULL, napi_default, NULL},
      {"fuseResubmit", NULL, Resubmit, NULL, NULL, NULL, napi_default, NULL},
      {"fuseSetReadahead", NULL, SetReadahead, NULL, NULL, NULL, napi_default, NULL},
      {"fuseDrainEvents", NULL, DrainEvents, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
