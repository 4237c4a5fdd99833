// What native/chunker.c takes from native/vmifs_native.c: the FastCDC cut and the zero test.
#ifndef VMIFS_CHUNKER_H
#define VMIFS_CHUNKER_H
#include <stddef.h>
#include <stdint.h>

/** The length of the chunk at p (n bytes of its run follow): FastCDC with the gear table set. */
size_t vmifs_cdc_cut(const uint8_t *p, size_t n, size_t min, size_t avg, size_t max, uint64_t mask_s, uint64_t mask_l);
/** Whether setGear was called. */
int vmifs_gear_ready(void);
/** Whether the n bytes at p are all zero. */
int vmifs_all_zero(const uint8_t *p, size_t n);
#endif
