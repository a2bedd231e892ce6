// The autograd of robustkernels::path_conv2d / path_linear in C++: saves the grouped input (x
// itself for segments), W, the mask, alpha and the forward's perm and counts, never W' or the
// noise; the backward op rebuilds them.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../kernel_choice.h"
#include "path_conv_ops.h"

namespace robustkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

OptionalTensor optional(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

// What both layers' autograd saves and reads: the grouped input (x itself for segments), W, the
// mask, alpha, the forward's perm and counts, the seed tensor; lams, seeds, segments, bias entries.
void save_routed(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                 const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                 at::IntArrayRef seeds, at::IntArrayRef segments, const OptionalTensor& seed_tensor,
                 const variable_list& outputs) {
  const bool routed = segments.empty();
  ctx->save_for_backward({routed ? outputs[3] : x, weight, mask.value_or(at::Tensor()), alpha.value_or(at::Tensor()),
                          outputs[1], outputs[2], seed_tensor.value_or(at::Tensor())});
  ctx->mark_non_differentiable({outputs[1], outputs[2], outputs[3]});
  auto& data = ctx->saved_data;
  data["lams"] = lams.vec();
  data["seeds"] = seeds.vec();
  data["segments"] = segments.vec();
  data["bias_entries"] = bias.has_value() ? bias->size(0) : 0;
  data["has_mask"] = mask.has_value();
  data["has_alpha"] = alpha.has_value();
}

// needs_input_grad counts the tensor inputs given (x, weight, then bias, mask and alpha where present).
Needs routed_needs(AutogradContext* ctx) {
  auto& data = ctx->saved_data;
  const bool has_bias = data["bias_entries"].toInt() > 0;
  const size_t alpha_index = 2 + has_bias + data["has_mask"].toBool();
  return {ctx->needs_input_grad(0), ctx->needs_input_grad(1), has_bias && ctx->needs_input_grad(2),
          data["has_alpha"].toBool() && ctx->needs_input_grad(alpha_index)};
}

variable_list routed_grads(const Outputs& grads, Needs needs, size_t num_inputs) {
  variable_list result(num_inputs);
  if (needs[0]) result[0] = std::get<0>(grads);
  if (needs[1]) result[1] = std::get<1>(grads);
  if (needs[2]) result[2] = std::get<2>(grads);
  if (needs[3]) result[4] = std::get<3>(grads);
  return result;
}

NeedsList needs_list(Needs needs) { return NeedsList({needs[0], needs[1], needs[2], needs[3]}); }

variable_list as_list(const Outputs& outputs) {
  return {std::get<0>(outputs), std::get<1>(outputs), std::get<2>(outputs), std::get<3>(outputs)};
}

struct PathConv2dFunction : torch::autograd::Function<PathConv2dFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const OptionalTensor& bias, const OptionalTensor& mask, const OptionalTensor& alpha,
                               at::ArrayRef<double> lams, at::IntArrayRef seeds, const OptionalTensor& route,
                               at::IntArrayRef segments, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups, const OptionalTensor& seed_tensor) {
    static const auto op = op_handle<PathConv2dOp>("robustkernels::path_conv2d");
    at::AutoDispatchBelowADInplaceOrView guard;
    const variable_list outputs = as_list(op.call(x, weight, bias, mask, alpha, lams, seeds, route, segments, stride,
                                                  padding, dilation, groups, seed_tensor));
    save_routed(ctx, x, weight, bias, mask, alpha, lams, seeds, segments, seed_tensor, outputs);
    auto& data = ctx->saved_data;
    data["stride"] = stride.vec();
    data["padding"] = padding.vec();
    data["dilation"] = dilation.vec();
    data["groups"] = groups;
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<PathConv2dBackwardOp>("robustkernels::path_conv2d_backward");
    const Needs needs = routed_needs(ctx);
    if (!grad_outputs[0].defined()) return variable_list(14);
    const auto saved = ctx->get_saved_variables();
    auto& data = ctx->saved_data;
    const Outputs grads = op.call(grad_outputs[0], saved[0], saved[1], optional(saved[2]), optional(saved[3]),
                                  saved[4], saved[5], data["lams"].toDoubleVector(), data["seeds"].toIntVector(),
                                  data["segments"].toIntVector(), data["bias_entries"].toInt(),
                                  data["stride"].toIntVector(), data["padding"].toIntVector(),
                                  data["dilation"].toIntVector(), data["groups"].toInt(), needs_list(needs),
                                  optional(saved[6]));
    return routed_grads(grads, needs, 14);
  }
};

struct PathLinearFunction : torch::autograd::Function<PathLinearFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const OptionalTensor& bias, const OptionalTensor& mask, const OptionalTensor& alpha,
                               at::ArrayRef<double> lams, at::IntArrayRef seeds, const OptionalTensor& route,
                               at::IntArrayRef segments, const OptionalTensor& seed_tensor) {
    static const auto op = op_handle<PathLinearOp>("robustkernels::path_linear");
    at::AutoDispatchBelowADInplaceOrView guard;
    const variable_list outputs =
        as_list(op.call(x, weight, bias, mask, alpha, lams, seeds, route, segments, seed_tensor));
    save_routed(ctx, x, weight, bias, mask, alpha, lams, seeds, segments, seed_tensor, outputs);
    return outputs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<PathLinearBackwardOp>("robustkernels::path_linear_backward");
    const Needs needs = routed_needs(ctx);
    if (!grad_outputs[0].defined()) return variable_list(10);
    const auto saved = ctx->get_saved_variables();
    auto& data = ctx->saved_data;
    const Outputs grads = op.call(grad_outputs[0], saved[0], saved[1], optional(saved[2]), optional(saved[3]),
                                  saved[4], saved[5], data["lams"].toDoubleVector(), data["seeds"].toIntVector(),
                                  data["segments"].toIntVector(), data["bias_entries"].toInt(), needs_list(needs),
                                  optional(saved[6]));
    return routed_grads(grads, needs, 10);
  }
};

Outputs as_outputs(const variable_list& v) { return {v[0], v[1], v[2], v[3]}; }

Outputs path_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                             at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             const OptionalTensor& seed_tensor) {
  return as_outputs(PathConv2dFunction::apply(x, weight, bias, mask, alpha, lams, seeds, route, segments, stride,
                                              padding, dilation, groups, seed_tensor));
}

Outputs path_linear_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                             at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                             const OptionalTensor& seed_tensor) {
  return as_outputs(PathLinearFunction::apply(x, weight, bias, mask, alpha, lams, seeds, route, segments, seed_tensor));
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) {
  m.impl("path_conv2d", &path_conv2d_autograd);
  m.impl("path_linear", &path_linear_autograd);
}

}  // namespace robustkernels
