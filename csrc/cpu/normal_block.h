// Blocks of Philox normals on the CPU: an AVX2 kernel chosen at run time where
// the processor has AVX2 and FMA, the scalar csrc/philox.h code elsewhere.
#pragma once

#include <cstdint>

namespace robustkernels {

// Largest block the kernels fill at once; callers keep their buffers this size.
constexpr int64_t kNormalBlock = 64;

// out[i] = philox_normal(seed, first + i) for i < count (count <= kNormalBlock).
void fill_normal_block(uint64_t seed, uint64_t first, int64_t count, float* out);

// Scalar implementation, exposed for the tests of the dispatching one.
void fill_normal_block_scalar(uint64_t seed, uint64_t first, int64_t count, float* out);

#if defined(__x86_64__)
// AVX2 + FMA implementation; defined in normal_block_avx2.cpp.
void fill_normal_block_avx2(uint64_t seed, uint64_t first, int64_t count, float* out);
#endif

}  // namespace robustkernels
