// AVX-512 Philox4x32-10 + Box-Muller: sixteen counters (64 normals) at a time,
// the same algorithm and SLEEF accuracy as normal_block_avx2.cpp (results are
// bit-identical to it). Compiled for AVX-512 in this translation unit only; runs
// only where fill_normal_block found AVX-512F/DQ at run time.
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512dq")

#include <immintrin.h>

#include <cstdint>

#include "../philox.h"
#include "normal_block.h"

extern "C" {
struct SleefFloat16Pair {
  __m512 sin;
  __m512 cos;
};
__m512 Sleef_logf16_u10avx512f(__m512);
SleefFloat16Pair Sleef_sincosf16_u10avx512f(__m512);
}

namespace robustkernels {
namespace {
inline void mul_hi_lo(__m512i value, __m512i constant, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(value, constant);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(value, 32), constant);
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
inline __m512 to_uniform(__m512i bits) {
  const __m512i folded = _mm512_xor_si512(bits, _mm512_srai_epi32(bits, 31));
  return _mm512_mul_ps(_mm512_cvtepi32_ps(folded), _mm512_set1_ps(4.6566127342e-10f));
}
inline void box_muller(__m512i b1, __m512i b2, __m512& first, __m512& second) {
  const __m512 u1 = _mm512_max_ps(to_uniform(b1), _mm512_set1_ps(1.0e-7f));
  const __m512 theta = _mm512_mul_ps(_mm512_set1_ps(6.283185307179586f), to_uniform(b2));
  const __m512 radius = _mm512_sqrt_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), Sleef_logf16_u10avx512f(u1)));
  const SleefFloat16Pair sc = Sleef_sincosf16_u10avx512f(theta);
  first = _mm512_mul_ps(radius, sc.cos);
  second = _mm512_mul_ps(radius, sc.sin);
}
// Normals (kNormal) or uniforms of sixteen counters per group, stored interleaved.
template <bool kNormal>
void philox4_avx512(uint64_t seed, uint64_t counter, int64_t groups, float* out) {
  __m512i key0[10], key1[10];
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) { key0[r] = _mm512_set1_epi32(k0); key1[r] = _mm512_set1_epi32(k1); k0 += kPhiloxKeyA; k1 += kPhiloxKeyB; }
  const __m512i ra = _mm512_set1_epi32(kPhiloxRoundA), rb = _mm512_set1_epi32(kPhiloxRoundB);
  const __m512i lane = _mm512_setr_epi32(0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15);
  // interleave index tables: out position p takes from vector p%4, lane p/4
  const __m512i idx_ab_lo = _mm512_setr_epi32(0,16,1,17,2,18,3,19,4,20,5,21,6,22,7,23);
  const __m512i idx_ab_hi = _mm512_setr_epi32(8,24,9,25,10,26,11,27,12,28,13,29,14,30,15,31);
  const __m512i idx_q_lo = _mm512_setr_epi64(0,8,1,9,2,10,3,11);
  const __m512i idx_q_hi = _mm512_setr_epi64(4,12,5,13,6,14,7,15);
  for (int64_t g = 0; g < groups; ++g, counter += 16, out += 64) {
    const __m512i base = _mm512_set1_epi32(static_cast<uint32_t>(counter));
    __m512i c0 = _mm512_add_epi32(base, lane);
    const __mmask16 carry = _mm512_cmplt_epu32_mask(c0, base);
    __m512i c1 = _mm512_mask_add_epi32(_mm512_set1_epi32(static_cast<uint32_t>(counter >> 32)), carry, _mm512_set1_epi32(static_cast<uint32_t>(counter >> 32)), _mm512_set1_epi32(1));
    __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
    for (int r = 0; r < 10; ++r) {
      __m512i hb, lb, ha, la;
      mul_hi_lo(c2, rb, hb, lb); mul_hi_lo(c0, ra, ha, la);
      c0 = _mm512_ternarylogic_epi32(hb, c1, key0[r], 0x96);
      c2 = _mm512_ternarylogic_epi32(ha, c3, key1[r], 0x96);
      c1 = lb; c3 = la;
    }
    __m512 n0, n1, n2, n3;
    if constexpr (kNormal) {
      box_muller(c0, c1, n0, n1); box_muller(c2, c3, n2, n3);
    } else {
      n0 = to_uniform(c0); n1 = to_uniform(c1); n2 = to_uniform(c2); n3 = to_uniform(c3);
    }
    // (n0,n1) -> pairs as 64-bit elements; (n2,n3) likewise; then interleave pairs.
    const __m512 ab_lo = _mm512_permutex2var_ps(n0, idx_ab_lo, n1);  // a0 b0 .. a7 b7
    const __m512 ab_hi = _mm512_permutex2var_ps(n0, idx_ab_hi, n1);  // a8 b8 .. a15 b15
    const __m512 cd_lo = _mm512_permutex2var_ps(n2, idx_ab_lo, n3);
    const __m512 cd_hi = _mm512_permutex2var_ps(n2, idx_ab_hi, n3);
    const __m512d abl = _mm512_castps_pd(ab_lo), abh = _mm512_castps_pd(ab_hi), cdl = _mm512_castps_pd(cd_lo), cdh = _mm512_castps_pd(cd_hi);
    _mm512_storeu_pd(reinterpret_cast<double*>(out), _mm512_permutex2var_pd(abl, idx_q_lo, cdl));
    _mm512_storeu_pd(reinterpret_cast<double*>(out + 16), _mm512_permutex2var_pd(abl, idx_q_hi, cdl));
    _mm512_storeu_pd(reinterpret_cast<double*>(out + 32), _mm512_permutex2var_pd(abh, idx_q_lo, cdh));
    _mm512_storeu_pd(reinterpret_cast<double*>(out + 48), _mm512_permutex2var_pd(abh, idx_q_hi, cdh));
  }
}
}  // namespace

void normals4_avx512(uint64_t seed, uint64_t counter, int64_t groups, float* out) {
  philox4_avx512<true>(seed, counter, groups, out);
}

void uniforms4_avx512(uint64_t seed, uint64_t counter, int64_t groups, float* out) {
  philox4_avx512<false>(seed, counter, groups, out);
}

}  // namespace robustkernels

#endif  // __x86_64__
