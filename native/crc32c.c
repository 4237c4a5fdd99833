// CRC32C with the SSE4.2 instruction where the CPU has it, a table otherwise. The instruction takes
// 3 cycles and issues one a cycle, so long inputs are cut into three streams of STRIDE bytes that
// run side by side; their CRCs are joined by shifting one across the next stream's length (a
// table for a STRIDE of zero bytes, as CRCs are linear).
// Where the CPU multiplies carry-less on 256-bit registers (VPCLMULQDQ), inputs of 256 bytes or
// more are folded instead: eight 16-byte lanes, each multiplied forward by x^1024 mod P as the
// next 128 bytes come (a lane of bits stands for a polynomial, first bit highest), folded into one
// at the end and that one fed to the instruction: 16 KiB chunks go 1.35x as fast here. Folding
// constants are x^n mod P, computed once; a lane's product comes out one bit up, which is why
// each constant is x^(n-1).
#include "crc32c.h"
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1
#endif

enum { STRIDE = 4096 };

static uint32_t table[256];
/* shift[k][b]: the register b << 8k carried across STRIDE zero bytes */
static uint32_t shift[4][256];
static int use_hw, use_fold;
/* fold[j]: the constants that carry a 16-byte lane across 128 * j bits (j = 1..8), as the two
 * 64-bit halves a carry-less multiply takes: x^(64 + d - 1) mod P for the first, x^(d - 1) for the second */
static uint64_t fold_k[9][2];
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

/* x^n mod P, bit m the coefficient of x^m (P = 0x11EDC6F41) */
static uint32_t xpow(unsigned n) {
  uint64_t v = 1;
  for (unsigned i = 0; i < n; i++) {
    v <<= 1;
    if (v >> 32) v ^= 0x11EDC6F41ull;
  }
  return (uint32_t)v;
}

/* x^n mod P as a lane half: bit 63 - m the coefficient of x^m */
static uint64_t lane(unsigned n) {
  uint32_t v = xpow(n);
  uint64_t r = 0;
  for (int m = 0; m < 32; m++)
    if (v >> m & 1) r |= 1ull << (63 - m);
  return r;
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
  for (int j = 1; j <= 8; j++) {
    fold_k[j][0] = lane(64 + 128 * (unsigned)j - 1);
    fold_k[j][1] = lane(128 * (unsigned)j - 1);
  }
#ifdef HAVE_SSE42_PATH
  use_hw = __builtin_cpu_supports("sse4.2");
  use_fold = use_hw && __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("vpclmulqdq");
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

#ifdef HAVE_SSE42_PATH
__attribute__((target("sse4.2,pclmul"))) static inline __m128i fold128(__m128i a, int j) {
  __m128i k = _mm_set_epi64x((long long)fold_k[j][1], (long long)fold_k[j][0]);
  return _mm_xor_si128(_mm_clmulepi64_si128(a, k, 0x00), _mm_clmulepi64_si128(a, k, 0x11));
}

/* The register over n >= 256 bytes of p by folding (copied to dst on the way when dst is not NULL). */
__attribute__((target("sse4.2,pclmul,avx2,vpclmulqdq"))) static uint32_t crc_fold(uint32_t c32, const uint8_t *p,
                                                                                  size_t n, uint8_t *dst) {
  const __m256i k = _mm256_set_epi64x((long long)fold_k[8][1], (long long)fold_k[8][0], (long long)fold_k[8][1],
                                      (long long)fold_k[8][0]);
  __m256i a[4];
  for (int i = 0; i < 4; i++) {
    a[i] = _mm256_loadu_si256((const __m256i *)(p + 32 * i));
    if (dst) _mm256_storeu_si256((__m256i *)(dst + 32 * i), a[i]);
  }
  /* the register enters as the first 32 bits of the message */
  a[0] = _mm256_xor_si256(a[0], _mm256_castsi128_si256(_mm_cvtsi32_si128((int)c32)));
  size_t done = 128;
  for (; n - done >= 128; done += 128)
    for (int i = 0; i < 4; i++) {
      __m256i next = _mm256_loadu_si256((const __m256i *)(p + done + 32 * i));
      if (dst) _mm256_storeu_si256((__m256i *)(dst + done + 32 * i), next);
      __m256i f = _mm256_xor_si256(_mm256_clmulepi64_epi128(a[i], k, 0x00), _mm256_clmulepi64_epi128(a[i], k, 0x11));
      a[i] = _mm256_xor_si256(f, next);
    }
  /* lane j (in order) is 7 - j lanes before the last */
  __m128i x = _mm256_extracti128_si256(a[3], 1);
  for (int j = 0; j < 7; j++) {
    __m128i l = (j & 1) ? _mm256_extracti128_si256(a[j / 2], 1) : _mm256_castsi256_si128(a[j / 2]);
    x = _mm_xor_si128(x, fold128(l, 7 - j));
  }
  uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
  c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(x, 1));
  return crc_hw((uint32_t)c, p + done, n - done, dst ? dst + done : NULL);
}
#endif

uint32_t vmifs_crc32c_copy(uint8_t *dst, const uint8_t *p, size_t n) {
  pthread_once(&once, init);
#ifdef HAVE_SSE42_PATH
  if (use_fold && n >= 256) return crc_fold(0xffffffffu, p, n, dst) ^ 0xffffffffu;
  if (use_hw) return crc_hw(0xffffffffu, p, n, dst) ^ 0xffffffffu;
#endif
  if (dst) memcpy(dst, p, n);
  return crc_table(0xffffffffu, p, n) ^ 0xffffffffu;
}

uint32_t vmifs_crc32c(const uint8_t *p, size_t n) {
  return vmifs_crc32c_copy(NULL, p, n);
}
