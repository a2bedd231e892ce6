// Building blocks of the CPU weight-noise kernels (noisy_weight.cpp, path_conv.cpp):
// row-wise iteration, blocks of Philox normals and the one-pass std(W).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "float_loops.h"
#include "normal_block.h"

namespace robustkernels {

inline constexpr int64_t kGrain = 8192;

// Calls body(row, start, end) for the pieces of [begin, end) that lie in one
// weight row (output channel) each, so that per-channel alpha is loaded once.
template <typename Body>
void for_each_row_piece(int64_t begin, int64_t end, int64_t inner, const Body& body) {
  while (begin < end) {
    const int64_t row = begin / inner;
    const int64_t stop = std::min(end, (row + 1) * inner);
    body(row, begin, stop);
    begin = stop;
  }
}

// Calls body(start, count, eta) over blocks of [begin, end), eta holding the
// normals of elements start .. start + count - 1.
template <typename Body>
void for_each_noise_block(uint64_t seed, int64_t begin, int64_t end, const Body& body) {
  alignas(64) float eta[kNormalBlock];
  for (int64_t start = begin; start < end; start += kNormalBlock) {
    const int64_t count = std::min(kNormalBlock, end - start);
    fill_normal_block(seed, static_cast<uint64_t>(start), count, eta);
    body(start, count, eta);
  }
}

struct ShiftedSums {
  double sum = 0.0;
  double sum_sq = 0.0;
};

// Unbiased standard deviation over the whole tensor in one pass: sums in double
// of the values shifted by the first element, which keeps the sum-of-squares
// formula free of cancellation when |mean| >> std. The sums run over fixed chunks
// added in chunk order, so the result does not depend on the number of threads.
// Defined as 0 below two elements: a single weight gets no noise, not NaN.
template <typename scalar_t>
double weight_std(const scalar_t* w, int64_t n) {
  if (n < 2) {
    return 0.0;
  }
  const double shift = static_cast<double>(w[0]);
  const int64_t chunks = (n + kGrain - 1) / kGrain;
  std::vector<ShiftedSums> partial(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t c_begin, int64_t c_end) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t begin = c * kGrain;
      shifted_sums(w + begin, std::min(n, begin + kGrain) - begin, shift, &partial[c].sum, &partial[c].sum_sq);
    }
  });
  ShiftedSums sums;
  for (const ShiftedSums& part : partial) {
    sums.sum += part.sum;
    sums.sum_sq += part.sum_sq;
  }
  const double count = static_cast<double>(n);
  const double m2 = std::max(0.0, sums.sum_sq - sums.sum * sums.sum / count);
  return std::sqrt(m2 / (count - 1.0));
}

}  // namespace robustkernels
