// Helpers the addon's files share: a growable array of bytes, and an order of chunk hashes.
#ifndef VMIFS_BYTES_H
#define VMIFS_BYTES_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/** A growable array of bytes: len used of cap. */
typedef struct {
  uint8_t *p;
  size_t len, cap;
} bytes;

/** Room for more bytes after len: 0, or -1 without memory (b unchanged). */
static inline int room(bytes *b, size_t more) {
  if (b->len + more <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more)
    cap *= 2;
  uint8_t *p = realloc(b->p, cap);
  if (!p) return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

/** Sorts the n indexes at idx by the bytes of the 32-byte hashes they name in hashes. */
void vmifs_order_by_hash(uint32_t *idx, size_t n, const uint8_t *hashes);
#endif
