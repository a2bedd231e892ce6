// AVX2 Philox4x32-10 + Box-Muller: eight counters (32 normals or uniforms) at a time. Same
// algorithm as csrc/philox.h; log and sincos come from SLEEF's 1-ULP AVX2
// routines, which libtorch_cpu exports, so results match the scalar code to an
// ULP or two. Only this translation unit is compiled for AVX2, and it only runs
// where fill_normal_block found AVX2 and FMA at run time.
#if defined(__x86_64__)
#pragma GCC target("avx2,fma")

#include <immintrin.h>

#include <cstdint>

#include "../philox.h"
#include "normal_block.h"

extern "C" {
struct SleefFloat8Pair {
  __m256 sin;
  __m256 cos;
};
__m256 Sleef_logf8_u10avx2(__m256);
SleefFloat8Pair Sleef_sincosf8_u10avx2(__m256);
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
  // value < 0 ? ~value : value, then scaled into [0, 1)
  const __m256i folded = _mm256_xor_si256(bits, _mm256_srai_epi32(bits, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(folded), _mm256_set1_ps(4.6566127342e-10f));
}

inline void box_muller(__m256i bits1, __m256i bits2, __m256& first, __m256& second) {
  const __m256 u1 = _mm256_max_ps(to_uniform(bits1), _mm256_set1_ps(1.0e-7f));
  const __m256 theta = _mm256_mul_ps(_mm256_set1_ps(6.283185307179586f), to_uniform(bits2));
  const __m256 radius = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), Sleef_logf8_u10avx2(u1)));
  const SleefFloat8Pair sincos = Sleef_sincosf8_u10avx2(theta);
  first = _mm256_mul_ps(radius, sincos.cos);
  second = _mm256_mul_ps(radius, sincos.sin);
}

// Writes a[j], b[j], c[j], d[j] to out[4 * j .. 4 * j + 3] for the eight lanes j.
inline void store_interleaved(__m256 a, __m256 b, __m256 c, __m256 d, float* out) {
  const __m256 ab_lo = _mm256_unpacklo_ps(a, b);  // a0 b0 a1 b1 | a4 b4 a5 b5
  const __m256 ab_hi = _mm256_unpackhi_ps(a, b);  // a2 b2 a3 b3 | a6 b6 a7 b7
  const __m256 cd_lo = _mm256_unpacklo_ps(c, d);
  const __m256 cd_hi = _mm256_unpackhi_ps(c, d);
  const __m256 r0 = _mm256_shuffle_ps(ab_lo, cd_lo, 0x44);  // lanes 0 | 4
  const __m256 r1 = _mm256_shuffle_ps(ab_lo, cd_lo, 0xEE);  // lanes 1 | 5
  const __m256 r2 = _mm256_shuffle_ps(ab_hi, cd_hi, 0x44);  // lanes 2 | 6
  const __m256 r3 = _mm256_shuffle_ps(ab_hi, cd_hi, 0xEE);  // lanes 3 | 7
  _mm256_storeu_ps(out, _mm256_permute2f128_ps(r0, r1, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(r2, r3, 0x20));
  _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(r0, r1, 0x31));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(r2, r3, 0x31));
}

// Normals (kNormal) or uniforms of eight counters per group, stored interleaved.
template <bool kNormal>
void philox4_avx2(uint64_t seed, uint64_t counter, int64_t groups, float* out) {
  // The round keys depend on the seed only: broadcast them once.
  __m256i key0[10];
  __m256i key1[10];
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    key0[round] = _mm256_set1_epi32(static_cast<int32_t>(k0));
    key1[round] = _mm256_set1_epi32(static_cast<int32_t>(k1));
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  const __m256i round_a = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxRoundA));
  const __m256i round_b = _mm256_set1_epi32(static_cast<int32_t>(kPhiloxRoundB));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(static_cast<int32_t>(0x80000000u));
  for (int64_t group = 0; group < groups; ++group, counter += 8, out += 32) {
    // Counter words: low and high halves of counter + lane, carrying into the
    // high word where the low word wraps (unsigned compare via the sign flip).
    const __m256i base_lo = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(counter)));
    __m256i c0 = _mm256_add_epi32(base_lo, lane);
    const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(base_lo, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int32_t>(counter >> 32)), carry);
    __m256i c2 = _mm256_setzero_si256();
    __m256i c3 = _mm256_setzero_si256();
    for (int round = 0; round < 10; ++round) {
      __m256i hi_b, lo_b, hi_a, lo_a;
      mul_hi_lo(c2, round_b, hi_b, lo_b);
      mul_hi_lo(c0, round_a, hi_a, lo_a);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), key0[round]);
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), key1[round]);
      c1 = lo_b;
      c3 = lo_a;
    }
    if constexpr (kNormal) {
      __m256 n0, n1, n2, n3;
      box_muller(c0, c1, n0, n1);
      box_muller(c2, c3, n2, n3);
      store_interleaved(n0, n1, n2, n3, out);
    } else {
      store_interleaved(to_uniform(c0), to_uniform(c1), to_uniform(c2), to_uniform(c3), out);
    }
  }
}

}  // namespace

void normals4_avx2(uint64_t seed, uint64_t counter, int64_t groups, float* out) {
  philox4_avx2<true>(seed, counter, groups, out);
}

void uniforms4_avx2(uint64_t seed, uint64_t counter, int64_t groups, float* out) {
  philox4_avx2<false>(seed, counter, groups, out);
}

}  // namespace robustkernels

#endif  // __x86_64__
