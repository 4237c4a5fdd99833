// A pack record of the chunk store (src/cache/chunk-store.ts, which reads and writes them too): a
// 40-byte header, then the chunk's bytes. The header (little-endian): magic "VMC2", length u32,
// CRC32C of the bytes u32, the hash's first 28 bytes. The first format's records ("VMC1", length,
// the whole hash) have no CRC: they are hashed. pack_writer.c writes records, fuse_session.c
// checks them on every read.
#ifndef VMIFS_RECORD_H
#define VMIFS_RECORD_H
#include <stdint.h>
#include <string.h>

enum { RECORD_HEADER = 40, RECORD_HASH_BYTES = RECORD_HEADER - 12 };
#define RECORD_MAGIC 0x32434d56u    /* "VMC2" */
#define RECORD_MAGIC_V1 0x31434d56u /* "VMC1" */

/** Fills a record's header for a chunk of `len` bytes with CRC32C `crc` and hash `hash` (32 bytes). */
static inline void record_put_header(uint8_t *h, const uint8_t *hash, uint32_t len, uint32_t crc) {
  const uint32_t magic = RECORD_MAGIC;
  memcpy(h, &magic, 4); /* little-endian, as x86 and arm64 are */
  memcpy(h + 4, &len, 4);
  memcpy(h + 8, &crc, 4);
  memcpy(h + 12, hash, RECORD_HASH_BYTES);
}

#endif
