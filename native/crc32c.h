// CRC32C (Castagnoli), the checksum every pack record carries (src/cache/chunk-store.ts): the FUSE
// session checks it on every read, at ~4x the speed of hashing the chunk again.
#ifndef VMIFS_CRC32C_H
#define VMIFS_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/** CRC32C of n bytes (initial value and final xor 0xffffffff: crc32c("123456789") = 0xe3069283). */
uint32_t vmifs_crc32c(const uint8_t *p, size_t n);

/** vmifs_crc32c(p, n), copying the n bytes to dst (when not NULL) as they are read. */
uint32_t vmifs_crc32c_copy(uint8_t *dst, const uint8_t *p, size_t n);

#endif
