// AVX2 Philox4x32-10 + Box-Muller, eight lanes at a time. Same algorithm as
// csrc/philox.h; log and cos come from SLEEF's 1-ULP AVX2 routines, which
// libtorch_cpu exports, so results match the scalar code to an ULP or two.
// This translation unit alone is compiled for AVX2; it only runs where
// fill_normal_block found AVX2 and FMA at run time.
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "../philox.h"
#include "normal_block.h"

extern "C" {
__m256 Sleef_logf8_u10avx2(__m256);
__m256 Sleef_cosf8_u10avx2(__m256);
}

namespace robustkernels {
namespace {

// High and low 32-bit words of constant * value in each of the eight lanes.
inline void mul_hi_lo(__m256i value, __m256i constant, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(value, constant);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(value, 32), constant);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

inline __m256 to_uniform(__m256i bits) {
  // value < 0 ? ~value : value, then scale into [0, 1)
  const __m256i folded = _mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(4.6566127342e-10f));
}

inline __m256 normal8(uint64_t seed, uint64_t first) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // Counter words: low and high halves of first + lane (no carry across lanes
  // unless the low word wraps, handled by the add-with-carry below).
  const uint32_t base_lo = static_cast<uint32_t>(first);
  const __m256i lo_words = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(base_lo)), lane);
  // carry where base_lo + lane overflowed: unsigned lo_words < base_lo
  const __m256i sign = _mm256_set1_epi32(static_cast<int32_t>(0x80000000u));
  const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32(static_cast<int32_t>(base_lo)), sign),
                                           _mm256_xor_si256(lo_words, sign));
  __m256i c0 = lo_words;
  __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int32_t>(first >> 32)), carry);
  __m256i c2 = _mm256_setzero_si256();
  __m256i c3 = _mm256_setzero_si256();
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i round_a = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxRoundA));
  const __m256i round_b = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxRoundB));
  for (int round = 0; round < 10; ++round) {
    __m256i hi_b, lo_b, hi_a, lo_a;
    mul_hi_lo(c2, round_b, hi_b, lo_b);
    mul_hi_lo(c0, round_a, hi_a, lo_a);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), _mm256_set1_epi32(static_cast<int32_t>(k0)));
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), _mm256_set1_epi32(static_cast<int32_t>(k1)));
    c1 = lo_b;
    c3 = lo_a;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  const __m256 u1 = _mm256_max_ps(to_uniform(c0), _mm256_set1_ps(1.0e-7f));
  const __m256 u2 = to_uniform(c1);
  const __m256 theta = _mm256_mul_ps(_mm256_set1_ps(6.283185307179586f), u2);
  const __m256 radius = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), Sleef_logf8_u10avx2(u1)));
  return _mm256_mul_ps(radius, Sleef_cosf8_u10avx2(theta));
}

}  // namespace

void fill_normal_block_avx2(uint64_t seed, uint64_t first, int64_t count, float* out) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    _mm256_storeu_ps(out + i, normal8(seed, first + static_cast<uint64_t>(i)));
  }
  if (i < count) {
    alignas(32) float tail[8];
    _mm256_store_ps(tail, normal8(seed, first + static_cast<uint64_t>(i)));
    std::copy(tail, tail + (count - i), out + i);
  }
}

}  // namespace robustkernels

#endif  // __x86_64__
