// Device helpers shared by the noisy weight kernels (csrc/cuda/noisy_weight_*.cu,
// philox_normal.cu): launch constants, explicit element conversions and rounding,
// grid-stride indexing, the mask / alpha lookups and the masked copy kernel.
//
// Only CUDA headers (no torch / ATen). Everything is in an anonymous namespace, so
// each .cu gets its own copy of the kernels (internal linkage, as when they shared
// one file); the host helper is inline so a .cu that does not use it gets no warning.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "noisy_weight_kernels.cuh"

namespace robustkernels {
namespace cuda {
namespace {

// The seed a kernel draws with (see SeedArg).
__device__ __forceinline__ uint64_t seed_value(SeedArg seed) {
  return seed.offset == nullptr ? seed.base : seed.base + static_cast<uint64_t>(*seed.offset);
}

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // grid-stride loops cover the rest

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

// dst[i] = mask[i] ? src[i] : 0 (the lam == 0 forward and the backward's dW).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    masked_copy_kernel(const T* __restrict__ src, const uint8_t* __restrict__ mask, T* __restrict__ dst,
                       int64_t n) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) {
    dst[i] = keep_at(mask, i) ? src[i] : zero<T>();
  }
}

inline unsigned int grid_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(kMaxGrid, (work + per_block - 1) / per_block)));
}

}  // namespace
}  // namespace cuda
}  // namespace robustkernels
