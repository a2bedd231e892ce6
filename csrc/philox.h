// Philox4x32-10 counter-based generator and the normal sampler built on it.
//
// Bit-for-bit the algorithm of Triton's tl.randint4x / tl.randn4x: the 64-bit
// seed is the key (low word, high word), the counter is (low word, high word, 0, 0)
// of offset / 4, and element `offset` of a tensor's noise is normal offset % 4 of
// the Box-Muller pairs over the four output words. The same header compiles for the C++ CPU kernels and, under
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

// Box-Muller on two uniforms (Triton's pair_uniform_to_normal): both branches.
RK_HOST_DEVICE void uniform_pair_to_normals(float u1, float u2, float& first, float& second) {
  u1 = u1 > 1.0e-7f ? u1 : 1.0e-7f;
  const float theta = 6.283185307179586f * u2;
  const float radius = sqrtf(-2.0f * logf(u1));
  first = radius * cosf(theta);
  second = radius * sinf(theta);
}

// The four normals of tl.randn4x(seed, counter): Box-Muller on output words
// (0, 1) gives normals 0 and 1, on words (2, 3) normals 2 and 3.
RK_HOST_DEVICE void philox_normal4(uint64_t seed, uint64_t counter, float out[4]) {
  uint32_t c0 = static_cast<uint32_t>(counter);
  uint32_t c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0;
  uint32_t c3 = 0;
  philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  uniform_pair_to_normals(uint32_to_uniform(c0), uint32_to_uniform(c1), out[0], out[1]);
  uniform_pair_to_normals(uint32_to_uniform(c2), uint32_to_uniform(c3), out[2], out[3]);
}

// Element `offset` of the noise stream of `seed`: normal offset % 4 of
// tl.randn4x(seed, offset / 4). One Philox call serves four consecutive
// elements; this single-element form computes only the pair it needs.
RK_HOST_DEVICE float philox_normal(uint64_t seed, uint64_t offset) {
  const uint64_t counter = offset >> 2;
  uint32_t c0 = static_cast<uint32_t>(counter);
  uint32_t c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0;
  uint32_t c3 = 0;
  philox4x32_10(c0, c1, c2, c3, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const unsigned lane = static_cast<unsigned>(offset & 3u);
  float first, second;
  if (lane < 2) {
    uniform_pair_to_normals(uint32_to_uniform(c0), uint32_to_uniform(c1), first, second);
  } else {
    uniform_pair_to_normals(uint32_to_uniform(c2), uint32_to_uniform(c3), first, second);
  }
  return (lane & 1u) ? second : first;
}

// Element `offset` of the uniform stream of `seed`: uniform offset % 4 of
// tl.rand4x(seed, offset / 4).
RK_HOST_DEVICE float philox_uniform(uint64_t seed, uint64_t offset) {
  const uint64_t counter = offset >> 2;
  uint32_t c[4] = {static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0, 0};
  philox4x32_10(c[0], c[1], c[2], c[3], static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return uint32_to_uniform(c[offset & 3u]);
}

}  // namespace robustkernels
