// CRC32C with the SSE4.2 instruction where the CPU has it, a table otherwise. The instruction takes
// 3 cycles and issues one a cycle, so long inputs are cut into three streams of STRIDE bytes that
// run side by side; their CRCs are joined by shifting one across the next stream's length (a
// table for a STRIDE of zero bytes, as CRCs are linear).
#include "crc32c.h"
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1
#endif

enum { STRIDE = 4096 };

static uint32_t table[256];
/* shift[k][b]: the register b << 8k carried across STRIDE zero bytes */
static uint32_t shift[4][256];
static int use_hw;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static uint32_t crc_table(uint32_t c, const uint8_t *p, size_t n) {
  while (n--)
    c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c;
}

static uint32_t across_zeros(uint32_t c, size_t n) {
  while (n--)
    c = table[c & 0xff] ^ (c >> 8);
  return c;
}

static void init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++)
      c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  /* linear in the register: one bit at a time, then every byte value as a sum of its bits */
  uint32_t bit[32];
  for (int i = 0; i < 32; i++)
    bit[i] = across_zeros(1u << i, STRIDE);
  for (int k = 0; k < 4; k++)
    for (uint32_t b = 0; b < 256; b++) {
      uint32_t c = 0;
      for (int i = 0; i < 8; i++)
        if (b & (1u << i)) c ^= bit[8 * k + i];
      shift[k][b] = c;
    }
#ifdef HAVE_SSE42_PATH
  use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static inline uint32_t shifted(uint32_t c) {
  return shift[0][c & 0xff] ^ shift[1][(c >> 8) & 0xff] ^ shift[2][(c >> 16) & 0xff] ^ shift[3][c >> 24];
}

#ifdef HAVE_SSE42_PATH
/* The register over n bytes of p, copied to dst on the way when dst is not NULL. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c32, const uint8_t *p, size_t n, uint8_t *dst) {
  while (n >= 3 * STRIDE) {
    uint64_t a = c32, b = 0, c = 0;
    const uint8_t *pa = p, *pb = p + STRIDE, *pc = p + 2 * STRIDE;
    for (size_t i = 0; i < STRIDE; i += 8) {
      uint64_t va, vb, vc;
      memcpy(&va, pa + i, 8);
      memcpy(&vb, pb + i, 8);
      memcpy(&vc, pc + i, 8);
      a = _mm_crc32_u64(a, va);
      b = _mm_crc32_u64(b, vb);
      c = _mm_crc32_u64(c, vc);
      if (dst) {
        memcpy(dst + i, &va, 8);
        memcpy(dst + STRIDE + i, &vb, 8);
        memcpy(dst + 2 * STRIDE + i, &vc, 8);
      }
    }
    c32 = shifted(shifted((uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
    p += 3 * STRIDE;
    n -= 3 * STRIDE;
    if (dst) dst += 3 * STRIDE;
  }
  uint64_t c = c32;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
    if (dst) {
      memcpy(dst, &v, 8);
      dst += 8;
    }
  }
  c32 = (uint32_t)c;
  if (dst) memcpy(dst, p, n);
  while (n--)
    c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
#endif

uint32_t vmifs_crc32c_copy(uint8_t *dst, const uint8_t *p, size_t n) {
  pthread_once(&once, init);
#ifdef HAVE_SSE42_PATH
  if (use_hw) return crc_hw(0xffffffffu, p, n, dst) ^ 0xffffffffu;
#endif
  if (dst) memcpy(dst, p, n);
  return crc_table(0xffffffffu, p, n) ^ 0xffffffffu;
}

uint32_t vmifs_crc32c(const uint8_t *p, size_t n) {
  return vmifs_crc32c_copy(NULL, p, n);
}
