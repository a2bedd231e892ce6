// Deterministic block reductions: a fixed shuffle tree per warp, then warp 0 over
// the warps' results in warp order, of doubles (sums) or of Moments (count, mean,
// M2; Chan et al.'s pairwise combination). blockDim.x must be a multiple of 32; the
// result is valid in thread 0. Only CUDA headers; anonymous namespace as in
// noisy_weight_device.cuh.
#pragma once

#include <cuda_runtime.h>

#include "noisy_weight_device.cuh"

namespace robustkernels {
namespace cuda {
namespace {

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

}  // namespace
}  // namespace cuda
}  // namespace robustkernels
