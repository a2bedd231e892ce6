// Sums in double over kLanes independent partial sums, added in a fixed order at
// the end: the loop vectorises without reassociating any one sum, so every
// instruction-set path gives the same result bit for bit (an `omp simd`
// reduction would add in an order that depends on the vector width).
#pragma once

#include <cstdint>

#include "multiversion.h"

namespace robustkernels {

inline constexpr int kLanes = 8;

// sum over i < n of term(i); term may also write per-element outputs.
template <typename Term>
RK_ALWAYS_INLINE inline double lane_sum(int64_t n, const Term& term) {
  double partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) partial[l] += term(i + l);
  }
  double total = 0.0;
  for (; i < n; ++i) total += term(i);
  for (int l = 0; l < kLanes; ++l) total += partial[l];
  return total;
}

}  // namespace robustkernels
