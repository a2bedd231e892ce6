#include "float_loops.h"

#include "multiversion.h"

namespace robustkernels {

RK_MULTIVERSION
void shifted_sums_f32(const float* x, int64_t n, double shift, double* sum, double* sum_sq) {
  double s = 0.0;
  double s2 = 0.0;
#pragma omp simd reduction(+ : s, s2)
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - shift;
    s += d;
    s2 += d * d;
  }
  *sum = s;
  *sum_sq = s2;
}

RK_MULTIVERSION
double masked_copy_dot_f32(const float* g, const bool* mask, const float* eta, float* gw, int64_t n) {
  double acc = 0.0;
  if (mask == nullptr) {
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; ++i) {
      gw[i] = g[i];
      acc += static_cast<double>(g[i]) * static_cast<double>(eta[i]);
    }
    return acc;
  }
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    const float kept = mask[i] ? g[i] : 0.0f;
    gw[i] = kept;
    acc += static_cast<double>(kept) * static_cast<double>(eta[i]);
  }
  return acc;
}

}  // namespace robustkernels
