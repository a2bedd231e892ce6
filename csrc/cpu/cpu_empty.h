// A CPU tensor allocated as at::empty's CPU kernel does, without its dispatch: the dispatch costs
// a small layer more than its kernels.
#pragma once

#include <ATen/EmptyTensor.h>

namespace robustkernels {

inline at::Tensor cpu_empty(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::detail::empty_cpu(sizes, dtype, /*pin_memory=*/false, std::nullopt);
}

}  // namespace robustkernels
