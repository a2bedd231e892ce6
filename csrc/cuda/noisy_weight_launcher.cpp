// CUDA dispatch of the noisy weight op family: argument checks, allocation and the
// current stream here; the kernels (raw pointers, no torch) in noisy_weight_std.cu,
// noisy_weight_fwd.cu, noisy_weight_bwd.cu and philox_normal.cu.
// Compiled only when torch has CUDA (see setup.py). Mirrors csrc/cpu/noisy_weight.cpp
// and, like it, never synchronises with the host: std(W) stays on the device.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // at::cuda::getCurrentCUDAStream (at::cuda re-exports c10::cuda)
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "../noisy_weight_checks.h"
#include "noisy_weight_kernels.cuh"

namespace robustkernels {
namespace {

// The CUDA type of an ATen element type (same size and bits).
template <typename scalar_t>
struct CudaType {
  using type = scalar_t;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(at::Half) == sizeof(__half), "at::Half and __half differ in size");
static_assert(sizeof(at::BFloat16) == sizeof(__nv_bfloat16), "at::BFloat16 and __nv_bfloat16 differ in size");

template <typename scalar_t>
const typename CudaType<scalar_t>::type* cuda_ptr(const at::Tensor& t) {
  return reinterpret_cast<const typename CudaType<scalar_t>::type*>(t.const_data_ptr<scalar_t>());
}

template <typename scalar_t>
typename CudaType<scalar_t>::type* cuda_mutable_ptr(at::Tensor& t) {
  return reinterpret_cast<typename CudaType<scalar_t>::type*>(t.mutable_data_ptr<scalar_t>());
}

const uint8_t* mask_ptr(const at::Tensor& mask) {
  return mask.defined() ? reinterpret_cast<const uint8_t*>(mask.const_data_ptr<bool>()) : nullptr;
}

// The kernels' seed: the host value, plus the device-held offset where the call has one.
cuda::SeedArg seed_arg(int64_t seed, const std::optional<at::Tensor>& seed_offset) {
  return {static_cast<uint64_t>(seed), seed_offset.has_value() ? seed_offset->const_data_ptr<int64_t>() : nullptr};
}

at::ScalarType sigma_dtype(const at::Tensor& weight) {
  return weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_fwd_cuda(const at::Tensor& weight_in, const at::Tensor& alpha_in,
                                                         double lam, int64_t seed,
                                                         const std::optional<at::Tensor>& mask_in,
                                                         const std::optional<at::Tensor>& seed_offset) {
  const AlphaMode mode =
      check_noisy_weight_args("noisy_weight", "weight", weight_in, alpha_in, seed, mask_in, at::kCUDA);
  check_seed_offset("noisy_weight", seed_offset, "weight", weight_in);
  const c10::cuda::CUDAGuard device_guard(weight_in.device());
  const at::Tensor weight = weight_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const int64_t n = weight.numel();
  const int64_t inner = n / weight.size(0);
  const auto acc_options = weight.options().dtype(sigma_dtype(weight));
  at::Tensor out = at::empty_like(weight, at::MemoryFormat::Contiguous);
  at::Tensor sigma = at::empty({}, acc_options);
  at::Tensor workspace = at::empty({cuda::noisy_weight_fwd_workspace_elems(n)}, acc_options);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weight.scalar_type(), "noisy_weight_fwd_cuda", [&] {
    using cuda_t = typename CudaType<scalar_t>::type;
    using acc_scalar_t = cuda::acc_t<cuda_t>;
    C10_CUDA_CHECK(cuda::launch_noisy_weight_fwd<cuda_t>(
        cuda_ptr<scalar_t>(weight), cuda_ptr<scalar_t>(alpha), mask_ptr(mask), cuda_mutable_ptr<scalar_t>(out),
        sigma.mutable_data_ptr<acc_scalar_t>(), workspace.mutable_data_ptr<acc_scalar_t>(), n, inner,
        static_cast<int>(mode), lam, seed_arg(seed, seed_offset), stream));
  });
  return {out.view(weight_in.sizes()), sigma};
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& alpha_in,
                                                         const at::Tensor& sigma_in, double lam, int64_t seed,
                                                         const std::optional<at::Tensor>& mask_in,
                                                         bool need_alpha_grad,
                                                         const std::optional<at::Tensor>& seed_offset) {
  const AlphaMode mode = check_noisy_weight_backward_args("noisy_weight_backward", grad_in, alpha_in, sigma_in, seed,
                                                          mask_in, at::kCUDA);
  check_seed_offset("noisy_weight_backward", seed_offset, "grad_out", grad_in);
  const c10::cuda::CUDAGuard device_guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const at::Tensor alpha = alpha_in.contiguous();
  const at::Tensor mask = mask_in.has_value() ? mask_in->contiguous() : at::Tensor();
  const int64_t n = grad.numel();
  const int64_t inner = n / grad.size(0);

  at::Tensor grad_weight = at::empty_like(grad, at::MemoryFormat::Contiguous);
  // Every element of grad_alpha is written by the launch (zeros when lam == 0).
  at::Tensor grad_alpha = need_alpha_grad ? at::empty_like(alpha, at::MemoryFormat::Contiguous)
                                          : at::empty({0}, alpha.options());
  const bool alpha_grad_nonzero = need_alpha_grad && lam != 0.0;
  // sigma is read on the device (as double), never with .item(): no host sync.
  const at::Tensor sigma = alpha_grad_nonzero ? sigma_in.to(grad.device(), at::kDouble).contiguous() : at::Tensor();
  at::Tensor workspace = at::empty(
      {cuda::noisy_weight_bwd_workspace_elems(n, inner, static_cast<int>(mode), need_alpha_grad, lam)},
      grad.options().dtype(at::kDouble));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "noisy_weight_bwd_cuda", [&] {
    using cuda_t = typename CudaType<scalar_t>::type;
    C10_CUDA_CHECK(cuda::launch_noisy_weight_bwd<cuda_t>(
        cuda_ptr<scalar_t>(grad), mask_ptr(mask), sigma.defined() ? sigma.const_data_ptr<double>() : nullptr,
        cuda_mutable_ptr<scalar_t>(grad_weight), need_alpha_grad ? cuda_mutable_ptr<scalar_t>(grad_alpha) : nullptr,
        workspace.numel() > 0 ? workspace.mutable_data_ptr<double>() : nullptr, n, inner, static_cast<int>(mode),
        lam, seed_arg(seed, seed_offset), stream));
  });
  if (need_alpha_grad) {
    grad_alpha = grad_alpha.view(alpha_in.sizes());
  }
  return {grad_weight.view(grad_in.sizes()), grad_alpha};
}

at::Tensor philox_normal_cuda(const at::Tensor& like, int64_t seed, int64_t offset) {
  check_philox_normal_args("philox_normal", like, seed, offset, at::kCUDA);
  const c10::cuda::CUDAGuard device_guard(like.device());
  at::Tensor out = at::empty(like.sizes(), like.options().dtype(at::kFloat));
  C10_CUDA_CHECK(cuda::launch_philox_normal(out.mutable_data_ptr<float>(), out.numel(), static_cast<uint64_t>(seed),
                                            static_cast<uint64_t>(offset),
                                            at::cuda::getCurrentCUDAStream().stream()));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("noisy_weight_fwd_kernel", &noisy_weight_fwd_cuda);
  m.impl("noisy_weight_bwd_kernel", &noisy_weight_bwd_cuda);
  m.impl("philox_normal_kernel", &philox_normal_cuda);
}

}  // namespace robustkernels
