// The reductions of the noisy weight kernels, for every dtype; the float32 ones
// run a body compiled once per instruction-set path (multiversion.h), since the
// extension's baseline is plain x86-64 and would leave them on SSE2.
#pragma once

#include <cstdint>
#include <type_traits>

#include "lane_sum.h"
#include "multiversion.h"

namespace robustkernels {

// *sum = sum(x - shift), *sum_sq = sum((x - shift)^2) over n elements, in double,
// in one pass with lane_sum's fixed order.
template <typename scalar_t>
RK_ALWAYS_INLINE inline void shifted_sums_body(const scalar_t* x, int64_t n, double shift, double* sum,
                                              double* sum_sq) {
  double lane[kLanes] = {};
  double lane_sq[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double d = static_cast<double>(x[i + l]) - shift;
      lane[l] += d;
      lane_sq[l] += d * d;
    }
  }
  double total = 0.0, total_sq = 0.0;
  for (; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - shift;
    total += d;
    total_sq += d * d;
  }
  for (int l = 0; l < kLanes; ++l) {
    total += lane[l];
    total_sq += lane_sq[l];
  }
  *sum = total;
  *sum_sq = total_sq;
}

// gw[i] = (mask == nullptr || mask[i]) ? g[i] : 0 for i < n; returns sum(gw * eta) in double.
template <typename scalar_t>
RK_ALWAYS_INLINE inline double masked_copy_dot_body(const scalar_t* g, const bool* mask, const float* eta,
                                                    scalar_t* gw, int64_t n) {
  return lane_sum(n, [&](int64_t i) {
    const double kept = (mask == nullptr || mask[i]) ? static_cast<double>(g[i]) : 0.0;
    gw[i] = static_cast<scalar_t>(kept);
    return kept * static_cast<double>(eta[i]);
  });
}

// The float32 instances, run on the selected path.
void shifted_sums_f32(const float* x, int64_t n, double shift, double* sum, double* sum_sq);
double masked_copy_dot_f32(const float* g, const bool* mask, const float* eta, float* gw, int64_t n);

template <typename scalar_t>
void shifted_sums(const scalar_t* x, int64_t n, double shift, double* sum, double* sum_sq) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    shifted_sums_f32(x, n, shift, sum, sum_sq);
  } else {
    shifted_sums_body(x, n, shift, sum, sum_sq);
  }
}

template <typename scalar_t>
double masked_copy_dot(const scalar_t* g, const bool* mask, const float* eta, scalar_t* gw, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return masked_copy_dot_f32(g, mask, eta, gw, n);
  } else {
    return masked_copy_dot_body(g, mask, eta, gw, n);
  }
}

}  // namespace robustkernels
