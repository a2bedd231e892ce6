// Philox4x32-10 counter-based generator and the normal sampler built on it.
//
// Bit-for-bit the algorithm of Triton's tl.randint4x / tl.randn: the 64-bit seed
// is the key (low word, high word), the 64-bit element offset is the counter
// (low word, high word, 0, 0), and a normal sample is Box-Muller over the first
// two output words. The same header compiles for the C++ CPU kernels and, under
// nvcc, for the CUDA kernels, so one seed means the same noise on every backend.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define RK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RK_HOST_DEVICE inline
#endif

namespace robustkernels {

constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;

RK_HOST_DEVICE uint32_t mulhi_u32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Ten rounds over counter (c0..c3) with key (k0, k1); the result overwrites c.
RK_HOST_DEVICE void philox4x32_10(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                  uint32_t k0, uint32_t k1) {
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t prev_c0 = c0;
    const uint32_t prev_c2 = c2;
    c0 = mulhi_u32(kPhiloxRoundB, prev_c2) ^ c1 ^ k0;
    c2 = mulhi_u32(kPhiloxRoundA, prev_c0) ^ c3 ^ k1;
    c1 = kPhiloxRoundB * prev_c2;
    c3 = kPhiloxRoundA * prev_c0;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
}

// Triton's uint_to_uniform_float for 32-bit words: [0, 1) without hitting 1.0.
RK_HOST_DEVICE float uint32_to_uniform(uint32_t bits) {
  int32_t value = static_cast<int32_t>(bits);
  value = value < 0 ? ~value : value;
  return static_cast<float>(value) * 4.6566127342e-10f;
}

// Box-Muller on two uniforms, first branch only (Triton's randn).
RK_HOST_DEVICE float uniform_pair_to_normal(float u1, float u2) {
  u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
  const float theta = 6.283185307179586f * u2;
  const float radius = sqrtf(-2.0f * logf(u1));
  return radius * cosf(theta);
}

// The standard normal sample that tl.randn(seed, offset) returns.
RK_HOST_DEVICE float philox_normal(uint64_t seed, uint64_t offset) {
  uint32_t c0 = static_cast<uint32_t>(offset);
  uint32_t c1 = static_cast<uint32_t>(offset >> 32);
  uint32_t c2 = 0;
  uint32_t c3 = 0;
  philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return uniform_pair_to_normal(uint32_to_uniform(c0), uint32_to_uniform(c1));
}

}  // namespace robustkernels
