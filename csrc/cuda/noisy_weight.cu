// CUDA kernels of the noisy / masked weight transform
//   W' = M * (W + lam * alpha * std(W) * eta(seed))
// and its backward; semantics in noisy_weight_kernels.cuh, the same as
// csrc/cpu/noisy_weight.cpp. eta is regenerated from (seed, element index) with
// the shared Philox of csrc/philox.h, never stored.
//
// Only CUDA headers here (no torch / ATen), so that `nvcc -c` builds this file on
// its own; the file also compiles under torch's default nvcc flags
// (__CUDA_NO_HALF_CONVERSIONS__ etc.): every half / bfloat16 conversion is explicit.
#include "noisy_weight_kernels.cuh"

#include <cuda_runtime.h>
#include <math_constants.h>

#include <algorithm>
#include <cstdint>

#include "../philox.h"

namespace robustkernels {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // grid-stride loops cover the rest
// std partials: at most kStdMaxPartials blocks of at least kStdMinChunk elements.
constexpr int64_t kStdMaxPartials = 1024;
constexpr int64_t kStdMinChunk = 4096;
// Backward: channels of at most kSmallInner elements are reduced one thread per
// channel; longer ones by blocks of kThreads threads, kItemsPerThread elements each.
constexpr int64_t kSmallInner = 32;
constexpr int64_t kItemsPerThread = 8;

// ---------------------------------------------------------------------------
// Element conversions (explicit: torch compiles with __CUDA_NO_HALF_CONVERSIONS__).
// The math type of T is acc_t<T>: float for float / half / bfloat16, double for double.

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_acc<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// static_cast<scalar_t>(double) of the CPU kernel: half / bfloat16 round through float.
template <typename T>
__device__ __forceinline__ T from_double(double x) {
  return from_acc<T>(static_cast<acc_t<T>>(x));
}

template <typename T>
__device__ __forceinline__ T zero() {
  return from_acc<T>(acc_t<T>(0));
}

// Rounded products / sums that nvcc does not contract into FMAs, so the forward
// rounds as the CPU kernel does: w + (scale * alpha) * eta.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

__device__ __forceinline__ float acc_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double acc_sqrt(double x) { return sqrt(x); }

// std::min is not a device function without --expt-relaxed-constexpr.
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

__device__ __forceinline__ bool keep_at(const uint8_t* __restrict__ mask, int64_t i) {
  return mask == nullptr || mask[i] != 0;
}

template <int Mode>
__device__ __forceinline__ int64_t alpha_index(int64_t i, int64_t inner) {
  if (Mode == kAlphaLayer) return 0;
  if (Mode == kAlphaChannel) return i / inner;
  return i;
}

// ---------------------------------------------------------------------------
// Deterministic block reductions: a fixed shuffle tree per warp, then warp 0 over
// the warps' results in warp order. blockDim.x must be a multiple of 32; the
// result is valid in thread 0.

template <typename Acc>
struct Moments {
  long long count;
  Acc mean;
  Acc m2;  // sum of squared deviations from mean
};

// Chan et al.'s pairwise combination of (count, mean, M2).
template <typename Acc>
__device__ __forceinline__ Moments<Acc> combine(const Moments<Acc>& a, const Moments<Acc>& b) {
  if (b.count == 0) return a;
  if (a.count == 0) return b;
  const long long count = a.count + b.count;
  const Acc delta = b.mean - a.mean;
  const Acc ratio = static_cast<Acc>(b.count) / static_cast<Acc>(count);
  Moments<Acc> out;
  out.count = count;
  out.mean = a.mean + delta * ratio;
  out.m2 = a.m2 + b.m2 + delta * delta * static_cast<Acc>(a.count) * ratio;
  return out;
}

template <typename Acc>
__device__ __forceinline__ Moments<Acc> shfl_down(const Moments<Acc>& v, int offset) {
  Moments<Acc> out;
  out.count = __shfl_down_sync(0xffffffffu, v.count, offset);
  out.mean = __shfl_down_sync(0xffffffffu, v.mean, offset);
  out.m2 = __shfl_down_sync(0xffffffffu, v.m2, offset);
  return out;
}

template <typename Acc>
__device__ __forceinline__ Moments<Acc> reduce_op(const Moments<Acc>& a, const Moments<Acc>& b) {
  return combine(a, b);
}

__device__ __forceinline__ double shfl_down(double v, int offset) {
  return __shfl_down_sync(0xffffffffu, v, offset);
}
__device__ __forceinline__ double reduce_op(double a, double b) { return a + b; }

template <typename V>
__device__ __forceinline__ V warp_reduce(V v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = reduce_op(v, shfl_down(v, offset));
  }
  return v;
}

// shared: kWarp elements of __shared__ memory; identity: the neutral element.
template <typename V>
__device__ V block_reduce(V v, V identity, V* shared) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  v = warp_reduce(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / kWarp) ? shared[lane] : identity;
    v = warp_reduce(v);
  }
  __syncthreads();  // shared may be reused right after
  return v;
}

// ---------------------------------------------------------------------------
// std(W): per-block (mean, M2) of contiguous chunks (Welford within a thread,
// Chan across threads), then one block combines the partials in a fixed order.

struct StdLayout {
  int64_t chunk;
  int64_t partials;
};

StdLayout std_layout(int64_t n) {
  StdLayout layout{kStdMinChunk, 0};
  if (n <= 0) return layout;
  layout.chunk = std::max(kStdMinChunk, (n + kStdMaxPartials - 1) / kStdMaxPartials);
  layout.partials = (n + layout.chunk - 1) / layout.chunk;
  return layout;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    std_partials_kernel(const T* __restrict__ weight, int64_t n, int64_t chunk, acc_t<T>* __restrict__ means,
                        acc_t<T>* __restrict__ m2s) {
  using Acc = acc_t<T>;
  __shared__ Moments<Acc> shared[kWarp];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk;
  const int64_t end = min64(begin + chunk, n);
  Moments<Acc> m{0, Acc(0), Acc(0)};
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const Acc x = to_acc(weight[i]);
    m.count += 1;
    const Acc delta = x - m.mean;
    m.mean += delta / static_cast<Acc>(m.count);
    m.m2 += delta * (x - m.mean);
  }
  m = block_reduce(m, Moments<Acc>{0, Acc(0), Acc(0)}, shared);
  if (threadIdx.x == 0) {
    means[blockIdx.x] = m.mean;
    m2s[blockIdx.x] = m.m2;
  }
}

template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    std_finalize_kernel(const Acc* __restrict__ means, const Acc* __restrict__ m2s, int64_t partials,
                        int64_t n, int64_t chunk, Acc* __restrict__ sigma) {
  __shared__ Moments<Acc> shared[kWarp];
  Moments<Acc> m{0, Acc(0), Acc(0)};
  for (int64_t p = threadIdx.x; p < partials; p += blockDim.x) {
    const Moments<Acc> part{static_cast<long long>(min64(chunk, n - p * chunk)), means[p], m2s[p]};
    m = combine(m, part);
  }
  m = block_reduce(m, Moments<Acc>{0, Acc(0), Acc(0)}, shared);
  if (threadIdx.x == 0) {
    sigma[0] = n < 2 ? Acc(0) : acc_sqrt(m.m2 / static_cast<Acc>(n - 1));
  }
}

// ---------------------------------------------------------------------------
// Elementwise kernels.

// dst[i] = mask[i] ? src[i] : 0 (the lam == 0 forward and the backward's dW).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    masked_copy_kernel(const T* __restrict__ src, const uint8_t* __restrict__ mask, T* __restrict__ dst,
                       int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    dst[i] = keep_at(mask, i) ? src[i] : zero<T>();
  }
}

template <typename T, int Mode>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_fwd_kernel(const T* __restrict__ weight, const T* __restrict__ alpha,
                            const uint8_t* __restrict__ mask, T* __restrict__ out,
                            const acc_t<T>* __restrict__ sigma, int64_t n, int64_t inner, double lam,
                            uint64_t seed) {
  using Acc = acc_t<T>;
  // static_cast<opmath_t>(lam * sigma) of the CPU kernel.
  const Acc scale = static_cast<Acc>(lam * static_cast<double>(sigma[0]));
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    if (!keep_at(mask, i)) {
      out[i] = zero<T>();  // dropped: no noise needed
      continue;
    }
    const Acc a = to_acc(alpha[alpha_index<Mode>(i, inner)]);
    const Acc eta = static_cast<Acc>(philox_normal(seed, static_cast<uint64_t>(i)));
    out[i] = from_acc<T>(add_rn(to_acc(weight[i]), mul_rn(mul_rn(scale, a), eta)));
  }
}

// Elementwise alpha: dW = M * g and dalpha = M * lam * sigma * g * eta (in double).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_bwd_element_kernel(const T* __restrict__ grad, const uint8_t* __restrict__ mask,
                                    const double* __restrict__ sigma, T* __restrict__ grad_weight,
                                    T* __restrict__ grad_alpha, int64_t n, double lam, uint64_t seed) {
  const double scale = lam * sigma[0];
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
                                        int64_t rows, int64_t inner, uint64_t seed) {
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
                                       uint64_t seed) {
  __shared__ double shared[kWarp];
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

// ---------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    philox_normal_kernel(float* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    out[i] = philox_normal(seed, offset + static_cast<uint64_t>(i));
  }
}

unsigned int grid_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(kMaxGrid, (work + per_block - 1) / per_block)));
}

}  // namespace

int64_t noisy_weight_fwd_workspace_elems(int64_t n) { return 2 * std_layout(n).partials; }

int64_t noisy_weight_bwd_workspace_elems(int64_t n, int64_t inner, int alpha_mode, bool need_alpha_grad,
                                         double lam) {
  if (!need_alpha_grad || lam == 0.0 || alpha_mode == kAlphaElement || n <= 0 || inner <= 0) return 0;
  return (n / inner) * bwd_layout(inner).blocks_per_row;
}

template <typename T>
cudaError_t launch_weight_std(const T* weight, int64_t n, acc_t<T>* workspace, acc_t<T>* sigma,
                              cudaStream_t stream) {
  const StdLayout layout = std_layout(n);
  acc_t<T>* means = workspace;
  acc_t<T>* m2s = workspace + layout.partials;
  if (layout.partials > 0) {
    std_partials_kernel<T><<<static_cast<unsigned int>(layout.partials), kThreads, 0, stream>>>(
        weight, n, layout.chunk, means, m2s);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  std_finalize_kernel<acc_t<T>><<<1, kThreads, 0, stream>>>(means, m2s, layout.partials, n, layout.chunk, sigma);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_noisy_weight_fwd(const T* weight, const T* alpha, const uint8_t* mask, T* out,
                                    acc_t<T>* sigma, acc_t<T>* workspace, int64_t n, int64_t inner,
                                    int alpha_mode, double lam, uint64_t seed, cudaStream_t stream) {
  if (alpha_mode < kAlphaLayer || alpha_mode > kAlphaElement || (n > 0 && inner <= 0)) {
    return cudaErrorInvalidValue;
  }
  if (sigma == nullptr || (n > 0 && workspace == nullptr)) return cudaErrorInvalidValue;
  cudaError_t err = launch_weight_std<T>(weight, n, workspace, sigma, stream);
  if (err != cudaSuccess || n <= 0) return err;
  const unsigned int grid = grid_for(n, kThreads);
  if (lam == 0.0) {
    // The clean path: no noise is generated and W' = M * W exactly.
    masked_copy_kernel<T><<<grid, kThreads, 0, stream>>>(weight, mask, out, n);
  } else if (alpha_mode == kAlphaLayer) {
    noisy_weight_fwd_kernel<T, kAlphaLayer><<<grid, kThreads, 0, stream>>>(weight, alpha, mask, out, sigma, n,
                                                                            inner, lam, seed);
  } else if (alpha_mode == kAlphaChannel) {
    noisy_weight_fwd_kernel<T, kAlphaChannel><<<grid, kThreads, 0, stream>>>(weight, alpha, mask, out, sigma, n,
                                                                              inner, lam, seed);
  } else {
    noisy_weight_fwd_kernel<T, kAlphaElement><<<grid, kThreads, 0, stream>>>(weight, alpha, mask, out, sigma, n,
                                                                              inner, lam, seed);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_noisy_weight_bwd(const T* grad, const uint8_t* mask, const double* sigma, T* grad_weight,
                                    T* grad_alpha, double* workspace, int64_t n, int64_t inner,
                                    int alpha_mode, double lam, uint64_t seed, cudaStream_t stream) {
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

cudaError_t launch_philox_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  philox_normal_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, n, seed, offset);
  return cudaGetLastError();
}

#define RK_INSTANTIATE_NOISY_WEIGHT_LAUNCHERS(T)                                                          \
  template cudaError_t launch_weight_std<T>(const T*, int64_t, acc_t<T>*, acc_t<T>*, cudaStream_t);      \
  template cudaError_t launch_noisy_weight_fwd<T>(const T*, const T*, const uint8_t*, T*, acc_t<T>*,      \
                                                  acc_t<T>*, int64_t, int64_t, int, double, uint64_t,     \
                                                  cudaStream_t);                                         \
  template cudaError_t launch_noisy_weight_bwd<T>(const T*, const uint8_t*, const double*, T*, T*, double*, \
                                                  int64_t, int64_t, int, double, uint64_t, cudaStream_t);
RK_INSTANTIATE_NOISY_WEIGHT_LAUNCHERS(float)
RK_INSTANTIATE_NOISY_WEIGHT_LAUNCHERS(double)
RK_INSTANTIATE_NOISY_WEIGHT_LAUNCHERS(__half)
RK_INSTANTIATE_NOISY_WEIGHT_LAUNCHERS(__nv_bfloat16)
#undef RK_INSTANTIATE_NOISY_WEIGHT_LAUNCHERS

}  // namespace cuda
}  // namespace robustkernels
