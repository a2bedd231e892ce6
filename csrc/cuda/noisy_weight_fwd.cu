// CUDA forward of the noisy / masked weight transform
//   W' = M * (W + lam * alpha * std(W) * eta(seed))
// semantics in noisy_weight_kernels.cuh, the same as csrc/cpu/noisy_weight.cpp. eta
// is regenerated from (seed, element index) with the shared Philox of
// csrc/philox.h, never stored; std(W) comes from noisy_weight_std.cu.
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

template <typename T, int Mode>
__global__ void __launch_bounds__(kThreads)
    noisy_weight_fwd_kernel(const T* __restrict__ weight, const T* __restrict__ alpha,
                            const uint8_t* __restrict__ mask, T* __restrict__ out,
                            const acc_t<T>* __restrict__ sigma, int64_t n, int64_t inner, double lam,
                            SeedArg seed_arg) {
  using Acc = acc_t<T>;
  const uint64_t seed = seed_value(seed_arg);
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

}  // namespace

template <typename T>
cudaError_t launch_noisy_weight_fwd(const T* weight, const T* alpha, const uint8_t* mask, T* out,
                                    acc_t<T>* sigma, acc_t<T>* workspace, int64_t n, int64_t inner,
                                    int alpha_mode, double lam, SeedArg seed, cudaStream_t stream) {
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

#define RK_INSTANTIATE_NOISY_WEIGHT_FWD(T)                                                     \
  template cudaError_t launch_noisy_weight_fwd<T>(const T*, const T*, const uint8_t*, T*, acc_t<T>*, \
                                                  acc_t<T>*, int64_t, int64_t, int, double, SeedArg,  \
                                                  cudaStream_t);
RK_INSTANTIATE_NOISY_WEIGHT_FWD(float)
RK_INSTANTIATE_NOISY_WEIGHT_FWD(double)
RK_INSTANTIATE_NOISY_WEIGHT_FWD(__half)
RK_INSTANTIATE_NOISY_WEIGHT_FWD(__nv_bfloat16)
#undef RK_INSTANTIATE_NOISY_WEIGHT_FWD

}  // namespace cuda
}  // namespace robustkernels
