// Philox4x32-10 over many blocks at once on x86 SIMD (host only), bit-identical to
// philox4x32_10 in csrc/philox.h. Compilers vectorize the 32x32->64 multiply of the plain
// loop as a full 64-bit multiply (three multiplies, half the lanes); here each multiply is
// two vpmuludq on even/odd lanes and two blends. The ISA is chosen once at run time.
#pragma once

#include <cstdint>

#include "../philox.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define VAE_PHILOX_X86 1
#endif

namespace vae_ext {
namespace cpu {

// Fills x0..x3[k] with the Philox outputs of blocks block0 + k for k < round_up(blocks, 16);
// the arrays must hold that many entries.
using PhiloxBlocksFn = void (*)(PhiloxKey, uint64_t, int64_t, uint32_t*, uint32_t*, uint32_t*,
                                uint32_t*);

inline void init_counters(uint64_t block0, int64_t blocks, uint32_t* x0, uint32_t* x1, uint32_t* x2,
                          uint32_t* x3) {
  for (int64_t k = 0; k < blocks; ++k) {
    const uint64_t block = block0 + static_cast<uint64_t>(k);
    x0[k] = static_cast<uint32_t>(block);
    x1[k] = static_cast<uint32_t>(block >> 32);
    x2[k] = 0;
    x3[k] = 0;
  }
}

inline void philox_blocks_generic(PhiloxKey key, uint64_t block0, int64_t blocks, uint32_t* x0,
                                  uint32_t* x1, uint32_t* x2, uint32_t* x3) {
  init_counters(block0, blocks, x0, x1, x2, x3);
  for (int64_t k = 0; k < blocks; ++k) {
    const Uint4 c = philox4x32_10({x0[k], x1[k], x2[k], x3[k]}, key);
    x0[k] = c.x0;
    x1[k] = c.x1;
    x2[k] = c.x2;
    x3[k] = c.x3;
  }
}

#ifdef VAE_PHILOX_X86
// GCC 12 warns inside its own AVX-512 intrinsics (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

__attribute__((target("avx512f"))) inline void philox_blocks_avx512(PhiloxKey key, uint64_t block0,
                                                                    int64_t blocks, uint32_t* x0,
                                                                    uint32_t* x1, uint32_t* x2,
                                                                    uint32_t* x3) {
  init_counters(block0, (blocks + 15) & ~int64_t{15}, x0, x1, x2, x3);
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
  constexpr __mmask16 kOdd = 0xAAAA;
  for (int64_t k = 0; k < blocks; k += 16) {
    __m512i c0 = _mm512_loadu_si512(x0 + k), c1 = _mm512_loadu_si512(x1 + k);
    __m512i c2 = _mm512_loadu_si512(x2 + k), c3 = _mm512_loadu_si512(x3 + k);
    for (int round = 0; round < 10; ++round) {
      const __m512i k0 = _mm512_set1_epi32(static_cast<int>(philox_round_key0(key, round)));
      const __m512i k1 = _mm512_set1_epi32(static_cast<int>(philox_round_key1(key, round)));
      const __m512i e0 = _mm512_mul_epu32(c0, m0);
      const __m512i o0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
      const __m512i e1 = _mm512_mul_epu32(c2, m1);
      const __m512i o1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
      const __m512i lo0 = _mm512_mask_blend_epi32(kOdd, e0, _mm512_slli_epi64(o0, 32));
      const __m512i hi0 = _mm512_mask_blend_epi32(kOdd, _mm512_srli_epi64(e0, 32), o0);
      const __m512i lo1 = _mm512_mask_blend_epi32(kOdd, e1, _mm512_slli_epi64(o1, 32));
      const __m512i hi1 = _mm512_mask_blend_epi32(kOdd, _mm512_srli_epi64(e1, 32), o1);
      c0 = _mm512_ternarylogic_epi32(hi1, c1, k0, 0x96);  // three-way xor
      c1 = lo1;
      c2 = _mm512_ternarylogic_epi32(hi0, c3, k1, 0x96);
      c3 = lo0;
    }
    _mm512_storeu_si512(x0 + k, c0);
    _mm512_storeu_si512(x1 + k, c1);
    _mm512_storeu_si512(x2 + k, c2);
    _mm512_storeu_si512(x3 + k, c3);
  }
}

__attribute__((target("avx2"))) inline void philox_blocks_avx2(PhiloxKey key, uint64_t block0,
                                                               int64_t blocks, uint32_t* x0,
                                                               uint32_t* x1, uint32_t* x2,
                                                               uint32_t* x3) {
  init_counters(block0, (blocks + 7) & ~int64_t{7}, x0, x1, x2, x3);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  uint32_t* rows[4] = {x0, x1, x2, x3};
  for (int64_t k = 0; k < blocks; k += 8) {
    __m256i c[4];
    for (int w = 0; w < 4; ++w)
      c[w] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[w] + k));
    __m256i c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (int round = 0; round < 10; ++round) {
      const __m256i k0 = _mm256_set1_epi32(static_cast<int>(philox_round_key0(key, round)));
      const __m256i k1 = _mm256_set1_epi32(static_cast<int>(philox_round_key1(key, round)));
      const __m256i e0 = _mm256_mul_epu32(c0, m0);
      const __m256i o0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i e1 = _mm256_mul_epu32(c2, m1);
      const __m256i o1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      const __m256i lo0 = _mm256_blend_epi32(e0, _mm256_slli_epi64(o0, 32), 0xAA);
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(e0, 32), o0, 0xAA);
      const __m256i lo1 = _mm256_blend_epi32(e1, _mm256_slli_epi64(o1, 32), 0xAA);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(e1, 32), o1, 0xAA);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
      c3 = lo0;
    }
    c[0] = c0;
    c[1] = c1;
    c[2] = c2;
    c[3] = c3;
    for (int w = 0; w < 4; ++w) _mm256_storeu_si256(reinterpret_cast<__m256i*>(rows[w] + k), c[w]);
  }
}

inline PhiloxBlocksFn select_philox_blocks() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return philox_blocks_avx512;
  if (__builtin_cpu_supports("avx2")) return philox_blocks_avx2;
  return philox_blocks_generic;
}

#pragma GCC diagnostic pop

#else

inline PhiloxBlocksFn select_philox_blocks() { return philox_blocks_generic; }

#endif

// Philox outputs of blocks [block0, block0 + blocks) with the fastest code for this CPU.
inline void philox_blocks(PhiloxKey key, uint64_t block0, int64_t blocks, uint32_t* x0,
                          uint32_t* x1, uint32_t* x2, uint32_t* x3) {
  static const PhiloxBlocksFn fn = select_philox_blocks();
  fn(key, block0, blocks, x0, x1, x2, x3);
}

}  // namespace cpu
}  // namespace vae_ext
