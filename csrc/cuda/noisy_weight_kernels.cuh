// CUDA kernels of the noisy / masked weight transform
//   W' = M * (W + lam * alpha * std(W) * eta(seed))
// and its backward, plus the Philox normal fill.
//
// The launch functions take raw device pointers, sizes and a cudaStream_t only and
// report the first CUDA error instead of throwing, so the kernels compile with nvcc
// alone (no torch / ATen headers); csrc/cuda/noisy_weight_launcher.cpp wraps them
// for the dispatcher. They mirror csrc/cpu/noisy_weight.cpp:
//   * std(W) is unbiased over the whole tensor and 0 for fewer than 2 elements;
//     it is reduced on the device (no host sync) into a device scalar of type
//     AccType<T> (float for float / half / bfloat16, double for double).
//   * alpha_mode is 0 (layer: alpha[0]), 1 (channel: alpha[i / inner]) or
//     2 (element: alpha[i]); inner = numel / weight.size(0).
//   * mask is one byte per element (torch.bool), nonzero = keep, or null for none.
//     Dropped elements are written as +0 whatever the noise.
//   * lam == 0 generates no noise: W' = M * W exactly and dalpha = 0.
//   * dalpha = lam * sigma * sum(M * dW' * eta) reduced to alpha's shape in double,
//     per-(channel, block) partials combined in a fixed order: no atomics, the same
//     bits on every run and every GPU (the launch shapes depend on the sizes only).
//
// All launch functions accept any stream; none of them synchronises it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace robustkernels {
namespace cuda {

// A kernel's seed: `base` plus, where the call's seed lives on the device, the int64 at `offset`
// (read by the kernel: a captured CUDA graph replays the read, so each replay draws the
// layer's current seed). offset is null for a seed known on the host.
struct SeedArg {
  uint64_t base;
  const int64_t* offset;
};

constexpr int kAlphaLayer = 0;
constexpr int kAlphaChannel = 1;
constexpr int kAlphaElement = 2;

// Accumulation / sigma type of a weight type (torch's sigma dtype of the op).
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

// Number of AccType<T> elements of the forward's workspace (std partials) for a
// weight of n elements.
int64_t noisy_weight_fwd_workspace_elems(int64_t n);

// Number of doubles of the backward's workspace (dalpha partials); 0 when the
// backward needs none (no alpha grad, lam == 0 or elementwise alpha).
int64_t noisy_weight_bwd_workspace_elems(int64_t n, int64_t inner, int alpha_mode, bool need_alpha_grad,
                                         double lam);

// sigma[0] = unbiased std of weight[0..n) (0 when n < 2).
// workspace: noisy_weight_fwd_workspace_elems(n) elements.
template <typename T>
cudaError_t launch_weight_std(const T* weight, int64_t n, acc_t<T>* workspace, acc_t<T>* sigma,
                              cudaStream_t stream);

// out[i] = mask[i] ? weight[i] + lam * alpha[a(i)] * sigma * philox_normal(seed, i) : 0,
// with sigma = std(weight) written to sigma[0]. out must not alias weight.
// workspace: noisy_weight_fwd_workspace_elems(n) elements.
template <typename T>
cudaError_t launch_noisy_weight_fwd(const T* weight, const T* alpha, const uint8_t* mask, T* out,
                                    acc_t<T>* sigma, acc_t<T>* workspace, int64_t n, int64_t inner,
                                    int alpha_mode, double lam, SeedArg seed, cudaStream_t stream);

// grad_weight[i] = mask[i] ? grad[i] : 0.
// grad_alpha (alpha's element count: 1, n / inner or n) is null when the alpha grad
// is not needed; otherwise it receives lam * sigma[0] * sum(M * grad * eta) reduced
// to alpha's shape (zeros when lam == 0; sigma is then not read).
// workspace: noisy_weight_bwd_workspace_elems(...) doubles.
template <typename T>
cudaError_t launch_noisy_weight_bwd(const T* grad, const uint8_t* mask, const double* sigma, T* grad_weight,
                                    T* grad_alpha, double* workspace, int64_t n, int64_t inner,
                                    int alpha_mode, double lam, SeedArg seed, cudaStream_t stream);

// out[i] = philox_normal(seed, offset + i) for i in [0, n).
cudaError_t launch_philox_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, cudaStream_t stream);

// Explicit instantiations live in noisy_weight_std.cu, noisy_weight_fwd.cu and
// noisy_weight_bwd.cu.
#define RK_DECLARE_NOISY_WEIGHT_LAUNCHERS(T)                                                                \
  extern template cudaError_t launch_weight_std<T>(const T*, int64_t, acc_t<T>*, acc_t<T>*, cudaStream_t); \
  extern template cudaError_t launch_noisy_weight_fwd<T>(const T*, const T*, const uint8_t*, T*, acc_t<T>*, \
                                                         acc_t<T>*, int64_t, int64_t, int, double, SeedArg,  \
                                                         cudaStream_t);                                     \
  extern template cudaError_t launch_noisy_weight_bwd<T>(const T*, const uint8_t*, const double*, T*, T*,   \
                                                         double*, int64_t, int64_t, int, double, SeedArg,   \
                                                         cudaStream_t);
RK_DECLARE_NOISY_WEIGHT_LAUNCHERS(float)
RK_DECLARE_NOISY_WEIGHT_LAUNCHERS(double)
RK_DECLARE_NOISY_WEIGHT_LAUNCHERS(__half)
RK_DECLARE_NOISY_WEIGHT_LAUNCHERS(__nv_bfloat16)
#undef RK_DECLARE_NOISY_WEIGHT_LAUNCHERS

}  // namespace cuda
}  // namespace robustkernels
