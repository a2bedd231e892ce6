// robustkernels::noisy_conv2d / noisy_linear and their backward ops, with their autograd in C++.
//
// The forward builds W' with the weight kernel and runs the platform's convolution or matmul
// (oneDNN / cuDNN / cuBLAS). Autograd saves only what a plain layer saves (x and W, each only
// where a gradient needs it; alpha and the mask are parameters and buffers): the backward op
// rebuilds W' from the seed, runs the platform backward, and sends dW' through the weight
// backward kernel for dW and dalpha.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../arg_checks.h"
#include "../kernel_choice.h"
#include "noisy_weight_ops.h"

namespace robustkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// x, weight and bias of a layer (the weight kernel checks alpha, the mask and the seed).
void check_layer_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                      int64_t weight_rank) {
  check_kernel_float(op, "weight", weight);
  TORCH_CHECK_VALUE(weight.dim() == weight_rank, op, ": weight must have rank ", weight_rank, ", got shape ",
                    weight.sizes());
  check_same_dtype(op, "x", x, "weight", weight);
  check_same_device(op, "x", x, "weight", weight);
  if (bias.has_value()) {
    check_same_dtype(op, "bias", *bias, "weight", weight);
    check_same_device(op, "bias", *bias, "weight", weight);
    check_shape(op, "bias", *bias, {weight.size(0)});
  }
}

void check_conv_args(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias, int64_t groups) {
  const char* op = "noisy_conv2d";
  check_layer_args(op, x, weight, bias, 4);
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must have rank 4, got shape ", x.sizes());
  TORCH_CHECK_VALUE(groups >= 1 && weight.size(0) % groups == 0 && x.size(1) == weight.size(1) * groups, op,
                    ": x has ", x.size(1), " channels but weight ", weight.sizes(), " with groups=", groups,
                    " expects ", weight.size(1) * groups);
}

void check_linear_args(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias) {
  const char* op = "noisy_linear";
  check_layer_args(op, x, weight, bias, 2);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must have rank 1 or more, got a 0-d tensor");
  TORCH_CHECK_VALUE(x.size(-1) == weight.size(1), op, ": x has ", x.size(-1),
                    " features in its last dimension, weight expects ", weight.size(1));
}

// std(W) for a backward that computes no dalpha (W was not saved).
at::Tensor unused_sigma(const at::Tensor& like) {
  return at::zeros({}, like.options().dtype(sigma_type(like.scalar_type())));
}

// (W', std(W)) rebuilt from W, or shape-only stand-ins where only dW' is needed (as
// torch.nn.grad.conv2d_weight uses).
std::tuple<at::Tensor, at::Tensor> rebuilt_weight(const OptionalTensor& weight, at::IntArrayRef weight_size,
                                                  const at::Tensor& alpha, double lam, int64_t seed,
                                                  const OptionalTensor& mask, const at::Tensor& grad_y) {
  if (weight.has_value()) return noisy_weight_kernel(*weight, alpha, lam, seed, mask);
  return {at::empty({1}, grad_y.options()).expand(weight_size), unused_sigma(grad_y)};
}

at::Tensor noisy_conv2d_impl(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups, const OptionalTensor& seed_tensor) {
  check_conv_args(x, weight, bias, groups);
  const int64_t resolved = resolved_seed("noisy_conv2d", seed, seed_tensor);
  const at::Tensor effective = std::get<0>(noisy_weight_kernel(weight, alpha, lam, resolved, mask));
  return at::conv2d(x, effective, bias, stride, padding, dilation, groups);
}

Grads noisy_conv2d_backward_impl(const at::Tensor& grad_y, const OptionalTensor& x, const OptionalTensor& weight,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, const OptionalTensor& seed_tensor, at::IntArrayRef x_size,
                                 at::IntArrayRef weight_size, bool has_bias, std::array<bool, 4> output_mask) {
  const auto [need_x, need_weight, need_bias, need_alpha] = output_mask;
  const int64_t resolved = resolved_seed("noisy_conv2d_backward", seed, seed_tensor);
  TORCH_CHECK_VALUE(!(need_x || need_alpha) || weight.has_value(),
                    "noisy_conv2d_backward: weight is needed for the gradients of x and alpha");
  TORCH_CHECK_VALUE(!(need_weight || need_alpha) || x.has_value(),
                    "noisy_conv2d_backward: x is needed for the gradients of weight and alpha");
  const auto [effective, sigma] = rebuilt_weight(weight, weight_size, alpha, lam, resolved, mask, grad_y);
  const at::Tensor input = x.has_value() ? *x : at::empty({1}, grad_y.options()).expand(x_size);
  const int64_t out_channels = weight_size[0];
  auto [grad_x, grad_effective, grad_bias] = at::convolution_backward(
      grad_y, input, effective, has_bias ? at::OptionalIntArrayRef(at::IntArrayRef(&out_channels, 1)) : std::nullopt,
      stride, padding, dilation, false, {0, 0}, groups, {need_x, need_weight || need_alpha, need_bias && has_bias});
  at::Tensor grad_weight, grad_alpha;
  if (need_weight || need_alpha) {
    std::tie(grad_weight, grad_alpha) =
        noisy_weight_backward_kernel(grad_effective, alpha, sigma, lam, resolved, mask, need_alpha);
  }
  return {or_empty(grad_x, grad_y), or_empty(grad_weight, grad_y), or_empty(grad_bias, grad_y),
          or_empty(grad_alpha, grad_y)};
}

at::Tensor noisy_linear_impl(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                             const OptionalTensor& seed_tensor) {
  check_linear_args(x, weight, bias);
  const int64_t resolved = resolved_seed("noisy_linear", seed, seed_tensor);
  const at::Tensor effective = std::get<0>(noisy_weight_kernel(weight, alpha, lam, resolved, mask));
  return at::linear(x, effective, bias);
}

Grads noisy_linear_backward_impl(const at::Tensor& grad_y, const OptionalTensor& x, const OptionalTensor& weight,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 const OptionalTensor& seed_tensor, at::IntArrayRef weight_size, bool has_bias,
                                 std::array<bool, 4> output_mask) {
  const auto [need_x, need_weight, need_bias, need_alpha] = output_mask;
  const int64_t resolved = resolved_seed("noisy_linear_backward", seed, seed_tensor);
  TORCH_CHECK_VALUE(!(need_x || need_alpha) || weight.has_value(),
                    "noisy_linear_backward: weight is needed for the gradients of x and alpha");
  TORCH_CHECK_VALUE(!(need_weight || need_alpha) || x.has_value(),
                    "noisy_linear_backward: x is needed for the gradients of weight and alpha");
  const auto [effective, sigma] = rebuilt_weight(weight, weight_size, alpha, lam, resolved, mask, grad_y);
  const at::Tensor grad_rows = grad_y.reshape({-1, grad_y.size(-1)});
  at::Tensor grad_x, grad_bias, grad_weight, grad_alpha;
  if (need_x) grad_x = at::matmul(grad_y, effective);
  if (need_bias && has_bias) grad_bias = grad_rows.sum(0);
  if (need_weight || need_alpha) {
    const at::Tensor grad_effective = grad_rows.t().mm(x->reshape({-1, x->size(-1)}));
    std::tie(grad_weight, grad_alpha) =
        noisy_weight_backward_kernel(grad_effective, alpha, sigma, lam, resolved, mask, need_alpha);
  }
  return {or_empty(grad_x, grad_y), or_empty(grad_weight, grad_y), or_empty(grad_bias, grad_y),
          or_empty(grad_alpha, grad_y)};
}

OptionalTensor optional(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

// x and W only where the backward needs them, as a plain layer saves them: x for dW' (hence
// dW and dalpha), W to rebuild W' for dx and to recompute std(W) for dalpha.
void save_operands(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& alpha,
                   const OptionalTensor& mask, const OptionalTensor& seed_tensor) {
  const bool need_x = x.requires_grad(), need_weight = weight.requires_grad(), need_alpha = alpha.requires_grad();
  ctx->save_for_backward({need_weight || need_alpha ? x : at::Tensor(), need_x || need_alpha ? weight : at::Tensor(),
                          alpha, mask.value_or(at::Tensor()), seed_tensor.value_or(at::Tensor())});
}

// needs_input_grad indexes the tensor inputs actually given: bias shifts alpha's index.
std::array<bool, 4> needed_grads(AutogradContext* ctx, bool has_bias) {
  const size_t alpha_index = has_bias ? 3 : 2;
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), has_bias && ctx->needs_input_grad(2),
          ctx->needs_input_grad(alpha_index)};
}

variable_list layer_grads(const Grads& grads, std::array<bool, 4> needed, size_t num_inputs) {
  variable_list result(num_inputs);
  const at::Tensor* values[] = {&std::get<0>(grads), &std::get<1>(grads), &std::get<2>(grads), &std::get<3>(grads)};
  for (size_t i = 0; i < 4; ++i) {
    if (needed[i]) result[i] = *values[i];
  }
  return result;
}

struct NoisyConv2dFunction : torch::autograd::Function<NoisyConv2dFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const OptionalTensor& bias, const at::Tensor& alpha, double lam, int64_t seed,
                            const OptionalTensor& mask, at::IntArrayRef stride, at::IntArrayRef padding,
                            at::IntArrayRef dilation, int64_t groups, const OptionalTensor& seed_tensor) {
    static const auto op = op_handle<decltype(noisy_conv2d_impl)>("robustkernels::noisy_conv2d");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = op.call(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor);
    save_operands(ctx, x, weight, alpha, mask, seed_tensor);
    auto& data = ctx->saved_data;
    data["lam"] = lam;
    data["seed"] = seed;
    data["stride"] = stride.vec();
    data["padding"] = padding.vec();
    data["dilation"] = dilation.vec();
    data["groups"] = groups;
    data["x_size"] = x.sizes().vec();
    data["weight_size"] = weight.sizes().vec();
    data["has_bias"] = bias.has_value();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<decltype(noisy_conv2d_backward_impl)>("robustkernels::noisy_conv2d_backward");
    auto& data = ctx->saved_data;
    const bool has_bias = data["has_bias"].toBool();
    const auto needed = needed_grads(ctx, has_bias);
    const auto saved = ctx->get_saved_variables();
    const Grads grads = op.call(grad_outputs[0], optional(saved[0]), optional(saved[1]), saved[2],
                                data["lam"].toDouble(), data["seed"].toInt(), optional(saved[3]),
                                data["stride"].toIntVector(), data["padding"].toIntVector(),
                                data["dilation"].toIntVector(), data["groups"].toInt(), optional(saved[4]),
                                data["x_size"].toIntVector(), data["weight_size"].toIntVector(), has_bias, needed);
    return layer_grads(grads, needed, 12);
  }
};

struct NoisyLinearFunction : torch::autograd::Function<NoisyLinearFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const OptionalTensor& bias, const at::Tensor& alpha, double lam, int64_t seed,
                            const OptionalTensor& mask, const OptionalTensor& seed_tensor) {
    static const auto op = op_handle<decltype(noisy_linear_impl)>("robustkernels::noisy_linear");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor y = op.call(x, weight, bias, alpha, lam, seed, mask, seed_tensor);
    save_operands(ctx, x, weight, alpha, mask, seed_tensor);
    auto& data = ctx->saved_data;
    data["lam"] = lam;
    data["seed"] = seed;
    data["weight_size"] = weight.sizes().vec();
    data["has_bias"] = bias.has_value();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<decltype(noisy_linear_backward_impl)>("robustkernels::noisy_linear_backward");
    auto& data = ctx->saved_data;
    const bool has_bias = data["has_bias"].toBool();
    const auto needed = needed_grads(ctx, has_bias);
    const auto saved = ctx->get_saved_variables();
    const Grads grads =
        op.call(grad_outputs[0], optional(saved[0]), optional(saved[1]), saved[2], data["lam"].toDouble(),
                data["seed"].toInt(), optional(saved[3]), optional(saved[4]), data["weight_size"].toIntVector(),
                has_bias, needed);
    return layer_grads(grads, needed, 8);
  }
};

at::Tensor noisy_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, const OptionalTensor& seed_tensor) {
  return NoisyConv2dFunction::apply(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups,
                                    seed_tensor);
}

at::Tensor noisy_linear_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 const OptionalTensor& seed_tensor) {
  return NoisyLinearFunction::apply(x, weight, bias, alpha, lam, seed, mask, seed_tensor);
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("noisy_conv2d", &noisy_conv2d_impl);
  m.impl("noisy_conv2d_backward", &noisy_conv2d_backward_impl);
  m.impl("noisy_linear", &noisy_linear_impl);
  m.impl("noisy_linear_backward", &noisy_linear_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("noisy_conv2d", &noisy_conv2d_impl);
  m.impl("noisy_conv2d_backward", &noisy_conv2d_backward_impl);
  m.impl("noisy_linear", &noisy_linear_impl);
  m.impl("noisy_linear_backward", &noisy_linear_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) {
  m.impl("noisy_conv2d", &noisy_conv2d_autograd);
  m.impl("noisy_linear", &noisy_linear_autograd);
}

}  // namespace robustkernels
