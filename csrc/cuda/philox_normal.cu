// CUDA Philox normal fill: out[i] = philox_normal(seed, offset + i), the shared
// Philox of csrc/philox.h (robustkernels::philox_normal_kernel on CUDA); declared in
// noisy_weight_kernels.cuh.
//
// Only CUDA headers here (no torch / ATen), so that `nvcc -c` builds this file on
// its own; the file also compiles under torch's default nvcc flags
// (__CUDA_NO_HALF_CONVERSIONS__ etc.): every half / bfloat16 conversion is explicit.
#include <cuda_runtime.h>

#include <cstdint>

#include "../philox.h"
#include "noisy_weight_device.cuh"
#include "noisy_weight_kernels.cuh"

namespace robustkernels {
namespace cuda {
namespace {

__global__ void __launch_bounds__(kThreads)
    philox_normal_kernel(float* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    out[i] = philox_normal(seed, offset + static_cast<uint64_t>(i));
  }
}

}  // namespace

cudaError_t launch_philox_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  philox_normal_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, n, seed, offset);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace robustkernels
