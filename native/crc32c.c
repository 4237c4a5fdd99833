// CRC32C with the SSE4.2 instruction where the CPU has it (8 bytes a step), a table otherwise.
#include "crc32c.h"
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1
#endif

static uint32_t table[256];
static int use_hw;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
#ifdef HAVE_SSE42_PATH
  use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t crc_table(uint32_t c, const uint8_t *p, size_t n) {
  while (n--)
    c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

#ifdef HAVE_SSE42_PATH
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c32, const uint8_t *p, size_t n) {
  uint64_t c = c32;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  c32 = (uint32_t)c;
  while (n--)
    c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

uint32_t vmifs_crc32c(const uint8_t *p, size_t n) {
  pthread_once(&once, init);
#ifdef HAVE_SSE42_PATH
  if (use_hw) return crc_hw(0xffffffffu, p, n) ^ 0xffffffffu;
#endif
  return crc_table(0xffffffffu, p, n) ^ 0xffffffffu;
}
