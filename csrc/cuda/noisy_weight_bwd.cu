// CUDA backward of the noisy / masked weight transform: dW = M * dW' and
// dalpha = lam * sigma * sum(M * dW' * eta) reduced to alpha's shape in double, in a
// fixed order (no atomics); semantics in noisy_weight_kernels.cuh, the same as
// csrc/cpu/noisy_weight.cpp. eta is regenerated with the Philox of csrc/philox.h.
//
// Only CUDA headers here (no torch / ATen), so that `nvcc -c` builds this file on
// its own; the file also compiles under torch's default nvcc flags
// (__CUDA_NO_HALF_CONVERSIONS__ etc.): every half / bfloat16 conversion is explicit.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../philox.h"
#include "block_reduce.cuh"
#include "noisy_weight_device.cuh"
#include "noisy_weight_kernels.cuh"

namespace robustkernels {
namespace cuda {
namespace {

// Channels of at most kSmallInner elements are reduced one thread per channel;
// longer ones by blocks of kThreads threads, kItemsPerThread elements each.
constexpr int64_t kSmallInner = 32;
constexpr int64_t kItemsPerThread = 8;

// Elementwise alpha: dW = M * g and dalpha = M * lam * sigma * g * eta (in double).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_bwd_element_kernel(const T* __restrict__ grad, const uint8_t* __restrict__ mask,
                                    const double* __restrict__ sigma, T* __restrict__ grad_weight,
                                    T* __restrict__ grad_alpha, int64_t n, double lam, SeedArg seed_arg) {
  const double scale = lam * sigma[0];
  const uint64_t seed = seed_value(seed_arg);
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    if (!keep_at(mask, i)) {
      grad_weight[i] = zero<T>();
      grad_alpha[i] = zero<T>();
      continue;
    }
    const T g = grad[i];
    grad_weight[i] = g;
    const double eta = static_cast<double>(philox_normal(seed, static_cast<uint64_t>(i)));
    grad_alpha[i] = from_double<T>(scale * static_cast<double>(to_acc(g)) * eta);
  }
}

// ---------------------------------------------------------------------------
// Layer / channel alpha: dW = M * g, plus one double partial sum(M * g * eta) per
// (channel, block of the channel), combined in a fixed order by the finalize kernels.

struct BwdLayout {
  bool thread_per_row;     // inner <= kSmallInner: one thread sums a whole channel
  int threads;             // block size of the block-per-(channel, block) kernel
  int64_t blocks_per_row;  // partials per channel
  int64_t chunk;           // elements of a channel per block
};

BwdLayout bwd_layout(int64_t inner) {
  BwdLayout layout{true, kThreads, 1, inner};
  if (inner <= kSmallInner) return layout;
  layout.thread_per_row = false;
  layout.threads = static_cast<int>(std::min<int64_t>(kThreads, (inner + kWarp - 1) / kWarp * kWarp));
  const int64_t max_chunk = layout.threads * kItemsPerThread;
  layout.blocks_per_row = (inner + max_chunk - 1) / max_chunk;
  layout.chunk = (inner + layout.blocks_per_row - 1) / layout.blocks_per_row;
  return layout;
}

// Writes grad_weight[i] = M[i] * grad[i] and returns M[i] * grad[i] * eta(seed, i) in double.
template <typename T>
__device__ __forceinline__ double masked_grad_times_noise(const T* __restrict__ grad, const uint8_t* __restrict__ mask,
                                                          T* __restrict__ grad_weight, int64_t i, uint64_t seed) {
  if (!keep_at(mask, i)) {
    grad_weight[i] = zero<T>();
    return 0.0;
  }
  const T g = grad[i];
  grad_weight[i] = g;
  const double eta = static_cast<double>(philox_normal(seed, static_cast<uint64_t>(i)));
  return mul_rn(static_cast<double>(to_acc(g)), eta);
}

// One thread per channel: the channel's sum in element order, as the CPU kernel.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_bwd_rows_thread_kernel(const T* __restrict__ grad, const uint8_t* __restrict__ mask,
                                        T* __restrict__ grad_weight, double* __restrict__ partials,
                                        int64_t rows, int64_t inner, SeedArg seed_arg) {
  const uint64_t seed = seed_value(seed_arg);
  for (int64_t row = global_thread(); row < rows; row += grid_threads()) {
    double acc = 0.0;
    for (int64_t i = row * inner; i < (row + 1) * inner; ++i) {
      acc = add_rn(acc, masked_grad_times_noise(grad, mask, grad_weight, i, seed));
    }
    partials[row] = acc;
  }
}

// One block per (channel, block of chunk elements of the channel).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_bwd_rows_block_kernel(const T* __restrict__ grad, const uint8_t* __restrict__ mask,
                                       T* __restrict__ grad_weight, double* __restrict__ partials,
                                       int64_t rows, int64_t inner, int64_t blocks_per_row, int64_t chunk,
                                       SeedArg seed_arg) {
  __shared__ double shared[kWarp];
  const uint64_t seed = seed_value(seed_arg);
  const int64_t tasks = rows * blocks_per_row;
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t row = task / blocks_per_row;
    const int64_t column = (task - row * blocks_per_row) * chunk;
    const int64_t begin = row * inner + column;
    const int64_t end = row * inner + min64(column + chunk, inner);
    double acc = 0.0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      acc = add_rn(acc, masked_grad_times_noise(grad, mask, grad_weight, i, seed));
    }
    acc = block_reduce(acc, 0.0, shared);
    if (threadIdx.x == 0) partials[task] = acc;
  }
}

// Channel alpha: grad_alpha[c] = lam * sigma * (sum of channel c's partials, in order).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_bwd_channel_finalize_kernel(const double* __restrict__ partials, const double* __restrict__ sigma,
                                             T* __restrict__ grad_alpha, int64_t rows, int64_t blocks_per_row,
                                             double lam) {
  const double scale = lam * sigma[0];
  for (int64_t row = global_thread(); row < rows; row += grid_threads()) {
    double total = 0.0;
    for (int64_t b = 0; b < blocks_per_row; ++b) total += partials[row * blocks_per_row + b];
    grad_alpha[row] = from_double<T>(scale * total);
  }
}

// Layer alpha: grad_alpha[0] = lam * sigma * (all partials); launched as one block.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_bwd_layer_finalize_kernel(const double* __restrict__ partials, const double* __restrict__ sigma,
                                           T* __restrict__ grad_alpha, int64_t count, double lam) {
  __shared__ double shared[kWarp];
  double total = 0.0;
  for (int64_t p = threadIdx.x; p < count; p += blockDim.x) total += partials[p];
  total = block_reduce(total, 0.0, shared);
  if (threadIdx.x == 0) grad_alpha[0] = from_double<T>(lam * sigma[0] * total);
}

}  // namespace

int64_t noisy_weight_bwd_workspace_elems(int64_t n, int64_t inner, int alpha_mode, bool need_alpha_grad,
                                         double lam) {
  if (!need_alpha_grad || lam == 0.0 || alpha_mode == kAlphaElement || n <= 0 || inner <= 0) return 0;
  return (n / inner) * bwd_layout(inner).blocks_per_row;
}

template <typename T>
cudaError_t launch_noisy_weight_bwd(const T* grad, const uint8_t* mask, const double* sigma, T* grad_weight,
                                    T* grad_alpha, double* workspace, int64_t n, int64_t inner,
                                    int alpha_mode, double lam, SeedArg seed, cudaStream_t stream) {
  if (alpha_mode < kAlphaLayer || alpha_mode > kAlphaElement || (n > 0 && inner <= 0)) {
    return cudaErrorInvalidValue;
  }
  if (n <= 0) return cudaSuccess;
  const int64_t rows = n / inner;
  const unsigned int grid = grid_for(n, kThreads);
  if (grad_alpha == nullptr || lam == 0.0) {
    if (grad_alpha != nullptr) {
      const int64_t alpha_numel = alpha_mode == kAlphaLayer ? 1 : alpha_mode == kAlphaChannel ? rows : n;
      const cudaError_t err =
          cudaMemsetAsync(grad_alpha, 0, static_cast<size_t>(alpha_numel) * sizeof(T), stream);  // +0 bits
      if (err != cudaSuccess) return err;
    }
    masked_copy_kernel<T><<<grid, kThreads, 0, stream>>>(grad, mask, grad_weight, n);
    return cudaGetLastError();
  }
  if (sigma == nullptr) return cudaErrorInvalidValue;
  if (alpha_mode == kAlphaElement) {
    noisy_weight_bwd_element_kernel<T><<<grid, kThreads, 0, stream>>>(grad, mask, sigma, grad_weight, grad_alpha,
                                                                       n, lam, seed);
    return cudaGetLastError();
  }
  if (workspace == nullptr) return cudaErrorInvalidValue;
  const BwdLayout layout = bwd_layout(inner);
  if (layout.thread_per_row) {
    noisy_weight_bwd_rows_thread_kernel<T><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(
        grad, mask, grad_weight, workspace, rows, inner, seed);
  } else {
    noisy_weight_bwd_rows_block_kernel<T><<<grid_for(rows * layout.blocks_per_row, 1), layout.threads, 0, stream>>>(
        grad, mask, grad_weight, workspace, rows, inner, layout.blocks_per_row, layout.chunk, seed);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if (alpha_mode == kAlphaChannel) {
    noisy_weight_bwd_channel_finalize_kernel<T><<<grid_for(rows, kThreads), kThreads, 0, stream>>>(
        workspace, sigma, grad_alpha, rows, layout.blocks_per_row, lam);
  } else {
    noisy_weight_bwd_layer_finalize_kernel<T><<<1, kThreads, 0, stream>>>(
        workspace, sigma, grad_alpha, rows * layout.blocks_per_row, lam);
  }
  return cudaGetLastError();
}

#define RK_INSTANTIATE_NOISY_WEIGHT_BWD(T)                                                                \
  template cudaError_t launch_noisy_weight_bwd<T>(const T*, const uint8_t*, const double*, T*, T*, double*, \
                                                  int64_t, int64_t, int, double, SeedArg, cudaStream_t);
RK_INSTANTIATE_NOISY_WEIGHT_BWD(float)
RK_INSTANTIATE_NOISY_WEIGHT_BWD(double)
RK_INSTANTIATE_NOISY_WEIGHT_BWD(__half)
RK_INSTANTIATE_NOISY_WEIGHT_BWD(__nv_bfloat16)
#undef RK_INSTANTIATE_NOISY_WEIGHT_BWD

}  // namespace cuda
}  // namespace robustkernels
