// What the noisy weight op family's composite ops share: the seed they run with and the
// weight kernels they call (the device kernel, or its *_python twin under use_backend).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace robustkernels {

// `seed` plus the value of `seed_tensor` (a 0-dim int64 CPU tensor, read without a device
// sync) when one is given; a layer passes its per-call seed this way so that a compiled
// graph sees a tensor, not a Python int it would specialise on.
int64_t resolved_seed(const char* op, int64_t seed, const std::optional<at::Tensor>& seed_tensor);

// The seed of a noisy weight call: `value`, plus `device_offset` where the call's seed tensor
// lives on the weight's GPU. The kernels add that one on the device, so a captured CUDA graph
// replays the read, not the value: every replay draws the layer's current seed.
struct Seed {
  int64_t value = 0;
  std::optional<at::Tensor> device_offset;
};

// seed plus seed_tensor: one on the CPU is read here (resolved_seed), one on `weight`'s GPU is
// passed on to the kernels.
Seed call_seed(const char* op, int64_t seed, const std::optional<at::Tensor>& seed_tensor, const at::Tensor& weight);

// (W', std(W)) from the weight kernel.
std::tuple<at::Tensor, at::Tensor> noisy_weight_kernel(const at::Tensor& weight, const at::Tensor& alpha, double lam,
                                                       const Seed& seed, const std::optional<at::Tensor>& mask);

// (dW, dalpha) from dW' through the weight backward kernel; dalpha is empty without need_alpha_grad.
std::tuple<at::Tensor, at::Tensor> noisy_weight_backward_kernel(const at::Tensor& grad, const at::Tensor& alpha,
                                                                const at::Tensor& sigma, double lam, const Seed& seed,
                                                                const std::optional<at::Tensor>& mask,
                                                                bool need_alpha_grad);

// std(W)'s dtype for a weight of `dtype` (the kernels accumulate half precision in float32).
inline at::ScalarType sigma_type(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace robustkernels
