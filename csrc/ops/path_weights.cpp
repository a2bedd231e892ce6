// robustkernels::path_weights, path_weights_backward and route_sort: the routed layers' weight
// transform and sort as dispatcher ops, path_weights with its autograd in C++.
//   W'_p = M_p * (W_s(p) + lam_p * alpha_p * std(W_s(p)) * eta(seed_p)), returned with std(W_s)
//   (a constant for autograd, as in PNI); the backward regenerates eta from the seeds.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../arg_checks.h"
#include "../kernel_choice.h"
#include "noisy_weight_ops.h"
#include "path_conv_ops.h"

namespace robustkernels {

using OptionalTensor = std::optional<at::Tensor>;
using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using WeightsForward = TensorPair(const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                  at::ArrayRef<double>, at::IntArrayRef, const OptionalTensor&, const OptionalTensor&);
using WeightsBackward = TensorPair(const at::Tensor&, int64_t, const OptionalTensor&, const OptionalTensor&,
                                   const at::Tensor&, at::ArrayRef<double>, at::IntArrayRef, const OptionalTensor&,
                                   bool, const OptionalTensor&);
using RouteSort = TensorPair(const at::Tensor&, int64_t);

PathSeeds resolved_seeds(const char* op, at::IntArrayRef seeds, const OptionalTensor& seed_tensor,
                         const at::Tensor& weight) {
  PathSeeds resolved;
  resolved.values.reserve(seeds.size());
  if (seed_tensor.has_value() && !seed_tensor->is_cpu()) {
    for (int64_t seed : seeds) resolved.values.push_back(call_seed(op, seed, seed_tensor, weight).value);
    resolved.device_offset = seed_tensor;
    return resolved;
  }
  for (int64_t seed : seeds) resolved.values.push_back(resolved_seed(op, seed, seed_tensor));
  return resolved;
}

TensorPair path_weights_kernel(const at::Tensor& weight, const OptionalTensor& mask, const OptionalTensor& alpha,
                               at::ArrayRef<double> lams, const PathSeeds& seeds, const OptionalTensor& counts) {
  static const auto device = op_handle<WeightsForward>("robustkernels::path_weights_fwd_kernel");
  static const auto python = op_handle<WeightsForward>("robustkernels::path_weights_fwd_python");
  return chosen_kernel(device, python).call(weight, mask, alpha, lams, seeds.values, counts, seeds.device_offset);
}

TensorPair path_weights_backward_kernel(const at::Tensor& grad, int64_t entries, const OptionalTensor& mask,
                                        const OptionalTensor& alpha, const at::Tensor& sigma,
                                        at::ArrayRef<double> lams, const PathSeeds& seeds,
                                        const OptionalTensor& counts, bool need_alpha_grad) {
  static const auto device = op_handle<WeightsBackward>("robustkernels::path_weights_bwd_kernel");
  static const auto python = op_handle<WeightsBackward>("robustkernels::path_weights_bwd_python");
  return chosen_kernel(device, python)
      .call(grad, entries, mask, alpha, sigma, lams, seeds.values, counts, need_alpha_grad, seeds.device_offset);
}

TensorPair route_sort_kernel(const at::Tensor& route, int64_t num_paths) {
  static const auto device = op_handle<RouteSort>("robustkernels::route_sort_kernel");
  static const auto python = op_handle<RouteSort>("robustkernels::route_sort_python");
  return chosen_kernel(device, python).call(route, num_paths);
}

namespace {

using PathWeightsOp = TensorPair(const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                 at::ArrayRef<double>, at::IntArrayRef, const OptionalTensor&, const OptionalTensor&);

TensorPair path_weights_impl(const at::Tensor& weight, const OptionalTensor& mask, const OptionalTensor& alpha,
                             at::ArrayRef<double> lams, at::IntArrayRef seeds, const OptionalTensor& counts,
                             const OptionalTensor& seed_tensor) {
  return path_weights_kernel(weight, mask, alpha, lams, resolved_seeds("path_weights", seeds, seed_tensor, weight),
                             counts);
}

TensorPair path_weights_backward_impl(const at::Tensor& grad, int64_t entries, const OptionalTensor& mask,
                                      const OptionalTensor& alpha, const at::Tensor& sigma,
                                      at::ArrayRef<double> lams, at::IntArrayRef seeds, const OptionalTensor& counts,
                                      bool need_alpha_grad, const OptionalTensor& seed_tensor) {
  const auto resolved = resolved_seeds("path_weights_backward", seeds, seed_tensor, grad);
  return path_weights_backward_kernel(grad, entries, mask, alpha, sigma, lams, resolved, counts, need_alpha_grad);
}

TensorPair route_sort_impl(const at::Tensor& route, int64_t num_paths) {
  const char* op = "route_sort";
  check_defined(op, "route", route);
  TORCH_CHECK_TYPE(route.scalar_type() == at::kInt || route.scalar_type() == at::kLong, op,
                   ": route must be an int32 or int64 tensor, got ", dtype_name(route.scalar_type()));
  TORCH_CHECK_VALUE(route.dim() == 1, op, ": route must be 1-D [B], got shape ", route.sizes());
  TORCH_CHECK_VALUE(num_paths >= 1, op, ": num_paths must be a positive int, got ", num_paths);
  return route_sort_kernel(route, num_paths);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

OptionalTensor optional(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

struct PathWeightsFunction : torch::autograd::Function<PathWeightsFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& weight, const OptionalTensor& mask,
                               const OptionalTensor& alpha, at::ArrayRef<double> lams, at::IntArrayRef seeds,
                               const OptionalTensor& counts, const OptionalTensor& seed_tensor) {
    static const auto op = op_handle<PathWeightsOp>("robustkernels::path_weights");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, sigma] = op.call(weight, mask, alpha, lams, seeds, counts, seed_tensor);
    ctx->save_for_backward({mask.value_or(at::Tensor()), alpha.value_or(at::Tensor()), sigma,
                            counts.value_or(at::Tensor()), seed_tensor.value_or(at::Tensor())});
    auto& data = ctx->saved_data;
    data["entries"] = weight.size(0);
    data["lams"] = lams.vec();
    data["seeds"] = seeds.vec();
    data["has_alpha"] = alpha.has_value();
    ctx->mark_non_differentiable({sigma});
    return {out, sigma};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // needs_input_grad counts the tensor inputs given: an absent mask shifts alpha's index
    const auto saved = ctx->get_saved_variables();
    const bool need_weight = ctx->needs_input_grad(0);
    const bool need_alpha = ctx->saved_data["has_alpha"].toBool() && ctx->needs_input_grad(saved[0].defined() ? 2 : 1);
    variable_list result(7);
    if (!grads[0].defined() || !(need_weight || need_alpha)) return result;
    static const auto op = op_handle<decltype(path_weights_backward_impl)>("robustkernels::path_weights_backward");
    auto& data = ctx->saved_data;
    auto [grad_weight, grad_alpha] =
        op.call(grads[0], data["entries"].toInt(), optional(saved[0]), optional(saved[1]), saved[2],
                data["lams"].toDoubleVector(), data["seeds"].toIntVector(), optional(saved[3]), need_alpha,
                optional(saved[4]));
    if (need_weight) result[0] = grad_weight;
    if (need_alpha) result[2] = grad_alpha;
    return result;
  }
};

TensorPair path_weights_autograd(const at::Tensor& weight, const OptionalTensor& mask, const OptionalTensor& alpha,
                                 at::ArrayRef<double> lams, at::IntArrayRef seeds, const OptionalTensor& counts,
                                 const OptionalTensor& seed_tensor) {
  auto outputs = PathWeightsFunction::apply(weight, mask, alpha, lams, seeds, counts, seed_tensor);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("path_weights", &path_weights_impl);
  m.impl("path_weights_backward", &path_weights_backward_impl);
  m.impl("route_sort", &route_sort_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("path_weights", &path_weights_impl);
  m.impl("path_weights_backward", &path_weights_backward_impl);
  m.impl("route_sort", &route_sort_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) { m.impl("path_weights", &path_weights_autograd); }

}  // namespace robustkernels
