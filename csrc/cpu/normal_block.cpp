#include "normal_block.h"

#include <algorithm>

#include "../philox.h"
#include "cpu_isa.h"

namespace robustkernels {
namespace {

void fill_normal_block_scalar(uint64_t seed, uint64_t first, int64_t count, float* out) {
  int64_t i = 0;
  // Leading elements up to a multiple of four, then whole Philox calls.
  for (; i < count && ((first + i) & 3u) != 0; ++i) {
    out[i] = philox_normal(seed, first + i);
  }
  for (; i + 4 <= count; i += 4) {
    philox_normal4(seed, (first + i) >> 2, out + i);
  }
  for (; i < count; ++i) {
    out[i] = philox_normal(seed, first + i);
  }
}

using Block4 = void (*)(uint64_t, uint64_t, int64_t, float*);

// Whole groups of counters (8 or 16 per group) covering [first, first + count).
void fill_block_simd(Block4 kernel, int64_t counters_per_group, uint64_t seed, uint64_t first, int64_t count,
                     float* out) {
  alignas(64) float values[kNormalBlock + 64];
  const int64_t skip = static_cast<int64_t>(first & 3u);
  const int64_t per_group = 4 * counters_per_group;
  kernel(seed, first >> 2, (skip + count + per_group - 1) / per_group, values);
  std::copy(values + skip, values + skip + count, out);
}

}  // namespace

void fill_normal_block(uint64_t seed, uint64_t first, int64_t count, float* out) {
#if defined(__x86_64__)
  const CpuIsa isa = cpu_isa();
  if (isa == CpuIsa::kAvx512) return fill_block_simd(normals4_avx512, 16, seed, first, count, out);
  if (isa == CpuIsa::kAvx2) return fill_block_simd(normals4_avx2, 8, seed, first, count, out);
#endif
  fill_normal_block_scalar(seed, first, count, out);
}

void fill_uniform_block(uint64_t seed, uint64_t first, int64_t count, float* out) {
#if defined(__x86_64__)
  const CpuIsa isa = cpu_isa();
  if (isa == CpuIsa::kAvx512) return fill_block_simd(uniforms4_avx512, 16, seed, first, count, out);
  if (isa == CpuIsa::kAvx2) return fill_block_simd(uniforms4_avx2, 8, seed, first, count, out);
#endif
  for (int64_t i = 0; i < count; ++i) out[i] = philox_uniform(seed, first + i);
}

}  // namespace robustkernels
