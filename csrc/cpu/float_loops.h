// float32 inner loops of the noisy weight kernels, compiled for AVX-512, AVX2
// and the baseline, the best chosen at load time (GCC function multiversioning).
// The extension's baseline is plain x86-64, so these loops would otherwise run
// on SSE2 alone.
#pragma once

#include <cstdint>

namespace robustkernels {

// *sum = sum(x - shift), *sum_sq = sum((x - shift)^2) over n elements, in double.
void shifted_sums_f32(const float* x, int64_t n, double shift, double* sum, double* sum_sq);

// gw[i] = (mask == nullptr || mask[i]) ? g[i] : 0 for i < n; returns sum(gw * eta) in double.
double masked_copy_dot_f32(const float* g, const bool* mask, const float* eta, float* gw, int64_t n);

}  // namespace robustkernels
