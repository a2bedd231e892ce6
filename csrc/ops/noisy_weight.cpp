// robustkernels::noisy_weight and noisy_weight_backward: the weight transform as a dispatcher op
// with its autograd in C++ (no Python between the public function and the kernel).
//   W' = M * (W + lam * alpha * std(W) * eta(seed)), returned with std(W) (a constant for autograd,
//   as in PNI); the backward regenerates eta from the seed.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../arg_checks.h"
#include "../kernel_choice.h"
#include "noisy_weight_ops.h"

namespace robustkernels {

using WeightForward = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double, int64_t,
                                                         const std::optional<at::Tensor>&,
                                                         const std::optional<at::Tensor>&);
using WeightBackward = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                          double, int64_t, const std::optional<at::Tensor>&, bool,
                                                          const std::optional<at::Tensor>&);

int64_t resolved_seed(const char* op, int64_t seed, const std::optional<at::Tensor>& seed_tensor) {
  check_seed(op, "seed", seed);
  if (!seed_tensor.has_value()) return seed;
  const at::Tensor& t = *seed_tensor;
  check_dtype(op, "seed_tensor", t, at::kLong);
  TORCH_CHECK_VALUE(t.dim() == 0 && t.device().is_cpu(), op,
                    ": seed_tensor must be a 0-dim int64 CPU tensor, got shape ", t.sizes(), " on ", t.device());
  const int64_t offset = *t.const_data_ptr<int64_t>();
  int64_t total = 0;
  TORCH_CHECK_VALUE(offset >= 0 && !__builtin_add_overflow(seed, offset, &total), op,
                    ": seed must be in [0, 2**63), got seed + seed_tensor = ", seed, " + ", offset);
  return total;
}

Seed call_seed(const char* op, int64_t seed, const std::optional<at::Tensor>& seed_tensor, const at::Tensor& weight) {
  if (!seed_tensor.has_value() || seed_tensor->is_cpu()) return {resolved_seed(op, seed, seed_tensor), std::nullopt};
  check_seed(op, "seed", seed);
  check_dtype(op, "seed_tensor", *seed_tensor, at::kLong);
  TORCH_CHECK_VALUE(seed_tensor->dim() == 0 && seed_tensor->device() == weight.device(), op,
                    ": seed_tensor must be a 0-dim int64 tensor on the CPU or on the weight's device ", weight.device(),
                    ", got shape ", seed_tensor->sizes(), " on ", seed_tensor->device());
  return {seed, seed_tensor};
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_kernel(const at::Tensor& weight, const at::Tensor& alpha, double lam,
                                                       const Seed& seed, const std::optional<at::Tensor>& mask) {
  static const auto device = op_handle<WeightForward>("robustkernels::noisy_weight_fwd_kernel");
  static const auto python = op_handle<WeightForward>("robustkernels::noisy_weight_fwd_python");
  return chosen_kernel(device, python).call(weight, alpha, lam, seed.value, mask, seed.device_offset);
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_backward_kernel(const at::Tensor& grad, const at::Tensor& alpha,
                                                                const at::Tensor& sigma, double lam, const Seed& seed,
                                                                const std::optional<at::Tensor>& mask,
                                                                bool need_alpha_grad) {
  static const auto device = op_handle<WeightBackward>("robustkernels::noisy_weight_bwd_kernel");
  static const auto python = op_handle<WeightBackward>("robustkernels::noisy_weight_bwd_python");
  return chosen_kernel(device, python)
      .call(grad, alpha, sigma, lam, seed.value, mask, need_alpha_grad, seed.device_offset);
}

namespace {

using NoisyWeightOp = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double, int64_t,
                                                         const std::optional<at::Tensor>&,
                                                         const std::optional<at::Tensor>&);

std::tuple<at::Tensor, at::Tensor> noisy_weight_impl(const at::Tensor& weight, const at::Tensor& alpha, double lam,
                                                     int64_t seed, const std::optional<at::Tensor>& mask,
                                                     const std::optional<at::Tensor>& seed_tensor) {
  return noisy_weight_kernel(weight, alpha, lam, call_seed("noisy_weight", seed, seed_tensor, weight), mask);
}

std::tuple<at::Tensor, at::Tensor> noisy_weight_backward_impl(const at::Tensor& grad, const at::Tensor& alpha,
                                                              const at::Tensor& sigma, double lam, int64_t seed,
                                                              const std::optional<at::Tensor>& mask,
                                                              bool need_alpha_grad,
                                                              const std::optional<at::Tensor>& seed_tensor) {
  const Seed resolved = call_seed("noisy_weight_backward", seed, seed_tensor, grad);
  return noisy_weight_backward_kernel(grad, alpha, sigma, lam, resolved, mask, need_alpha_grad);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct NoisyWeightFunction : torch::autograd::Function<NoisyWeightFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& weight, const at::Tensor& alpha, double lam,
                               int64_t seed, const std::optional<at::Tensor>& mask,
                               const std::optional<at::Tensor>& seed_tensor) {
    static const auto op = op_handle<NoisyWeightOp>("robustkernels::noisy_weight");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, sigma] = op.call(weight, alpha, lam, seed, mask, seed_tensor);
    ctx->save_for_backward({alpha, sigma, mask.value_or(at::Tensor()), seed_tensor.value_or(at::Tensor())});
    ctx->saved_data["lam"] = lam;
    ctx->saved_data["seed"] = seed;
    ctx->mark_non_differentiable({sigma});
    return {out, sigma};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const bool need_weight = ctx->needs_input_grad(0), need_alpha = ctx->needs_input_grad(1);
    variable_list result(6);
    if (!grads[0].defined() || !(need_weight || need_alpha)) return result;
    static const auto op = op_handle<decltype(noisy_weight_backward_impl)>("robustkernels::noisy_weight_backward");
    const auto saved = ctx->get_saved_variables();
    auto optional = [](const at::Tensor& t) { return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt; };
    auto [grad_weight, grad_alpha] =
        op.call(grads[0], saved[0], saved[1], ctx->saved_data["lam"].toDouble(), ctx->saved_data["seed"].toInt(),
                optional(saved[2]), need_alpha, optional(saved[3]));
    if (need_weight) result[0] = grad_weight;
    if (need_alpha) result[1] = grad_alpha;
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> noisy_weight_autograd(const at::Tensor& weight, const at::Tensor& alpha,
                                                         double lam, int64_t seed,
                                                         const std::optional<at::Tensor>& mask,
                                                         const std::optional<at::Tensor>& seed_tensor) {
  auto outputs = NoisyWeightFunction::apply(weight, alpha, lam, seed, mask, seed_tensor);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("noisy_weight", &noisy_weight_impl);
  m.impl("noisy_weight_backward", &noisy_weight_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("noisy_weight", &noisy_weight_impl);
  m.impl("noisy_weight_backward", &noisy_weight_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) { m.impl("noisy_weight", &noisy_weight_autograd); }

}  // namespace robustkernels
