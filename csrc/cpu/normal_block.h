// Blocks of the library's Philox normals (and uniforms) on the CPU: AVX-512 or AVX2 kernels
// or the scalar csrc/philox.h code, whichever path cpu_isa.h selects. Element i of a stream is normal i % 4 of tl.randn4x(seed, i / 4), so
// a block costs one Philox call per four elements.
#pragma once

#include <cstdint>

namespace robustkernels {

// Largest block fill_normal_block fills at once; callers size their buffers so.
constexpr int64_t kNormalBlock = 128;

// out[i] = philox_normal(seed, first + i) for i < count (count <= kNormalBlock).
void fill_normal_block(uint64_t seed, uint64_t first, int64_t count, float* out);

// out[i] = philox_uniform(seed, first + i) for i < count (count <= kNormalBlock):
// U[0, 1), uniform i % 4 of tl.rand4x(seed, i / 4).
void fill_uniform_block(uint64_t seed, uint64_t first, int64_t count, float* out);

#if defined(__x86_64__)
// out[4 * j + k] = normal k of tl.randn4x(seed, counter + j), j < 8 * groups;
// defined in normal_block_avx2.cpp, runs only where the AVX2 path is selected.
void normals4_avx2(uint64_t seed, uint64_t counter, int64_t groups, float* out);
// The same for 16 * groups counters; normal_block_avx512.cpp, the AVX-512 path only.
void normals4_avx512(uint64_t seed, uint64_t counter, int64_t groups, float* out);
// The same layout of the uniforms of tl.rand4x.
void uniforms4_avx2(uint64_t seed, uint64_t counter, int64_t groups, float* out);
void uniforms4_avx512(uint64_t seed, uint64_t counter, int64_t groups, float* out);
#endif

}  // namespace robustkernels
