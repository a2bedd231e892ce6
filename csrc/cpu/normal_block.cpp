#include "normal_block.h"

#include "../philox.h"

namespace robustkernels {

void fill_normal_block_scalar(uint64_t seed, uint64_t first, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) {
    out[i] = philox_normal(seed, first + static_cast<uint64_t>(i));
  }
}

namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

void fill_normal_block(uint64_t seed, uint64_t first, int64_t count, float* out) {
  static const bool use_avx2 = cpu_has_avx2();
#if defined(__x86_64__)
  if (use_avx2) {
    fill_normal_block_avx2(seed, first, count, out);
    return;
  }
#endif
  fill_normal_block_scalar(seed, first, count, out);
}

}  // namespace robustkernels
