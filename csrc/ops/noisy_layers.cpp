// robustkernels::noisy_conv2d / noisy_linear and their backward ops, with their autograd in C++.
//
// The forward builds W' with the weight kernel and runs the platform's convolution or matmul
// (oneDNN / cuDNN / cuBLAS). Autograd saves only what a plain layer saves (x and W, each only
// where a gradient needs it; alpha and the mask are parameters and buffers): the backward op
// rebuilds W' from the seed, runs the platform backward, and sends dW' through the weight
// backward kernel for dW and dalpha.
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include "../arg_checks.h"
#include "../kernel_choice.h"
#include "autograd_nodes.h"
#include "noisy_weight_ops.h"

namespace robustkernels {
namespace {

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
                                                  const at::Tensor& alpha, double lam, const Seed& seed,
                                                  const OptionalTensor& mask, const at::Tensor& grad_y) {
  if (weight.has_value()) return noisy_weight_kernel(*weight, alpha, lam, seed, mask);
  return {at::empty({1}, grad_y.options()).expand(weight_size), unused_sigma(grad_y)};
}

// (dW, dalpha) from dW' (undefined: neither was asked for). Without a mask or dalpha, dW is dW'
// itself: the weight backward kernel would only copy it.
std::tuple<at::Tensor, at::Tensor> weight_grads(const at::Tensor& grad_effective, const at::Tensor& alpha,
                                                const at::Tensor& sigma, double lam, const Seed& seed,
                                                const OptionalTensor& mask, bool need_alpha) {
  if (!grad_effective.defined() || (!need_alpha && !mask.has_value())) return {grad_effective, at::Tensor()};
  return noisy_weight_backward_kernel(grad_effective, alpha, sigma, lam, seed, mask, need_alpha);
}

at::Tensor noisy_conv2d_impl(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                             int64_t groups, const OptionalTensor& seed_tensor) {
  check_conv_args(x, weight, bias, groups);
  const Seed resolved = call_seed("noisy_conv2d", seed, seed_tensor, weight);
  const at::Tensor effective = std::get<0>(noisy_weight_kernel(weight, alpha, lam, resolved, mask));
  return at::conv2d(x, effective, bias, stride, padding, dilation, groups);
}

Grads noisy_conv2d_backward_impl(const at::Tensor& grad_y, const OptionalTensor& x, const OptionalTensor& weight,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, const OptionalTensor& seed_tensor, at::IntArrayRef x_size,
                                 at::IntArrayRef weight_size, bool has_bias, std::array<bool, 4> output_mask) {
  const auto [need_x, need_weight, need_bias, need_alpha] = output_mask;
  const Seed resolved = call_seed("noisy_conv2d_backward", seed, seed_tensor, grad_y);
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
  const auto [grad_weight, grad_alpha] = weight_grads(grad_effective, alpha, sigma, lam, resolved, mask, need_alpha);
  return {grad_x, grad_weight, grad_bias, grad_alpha};
}

at::Tensor noisy_linear_impl(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                             const OptionalTensor& seed_tensor) {
  check_linear_args(x, weight, bias);
  const Seed resolved = call_seed("noisy_linear", seed, seed_tensor, weight);
  const at::Tensor effective = std::get<0>(noisy_weight_kernel(weight, alpha, lam, resolved, mask));
  return at::linear(x, effective, bias);
}

Grads noisy_linear_backward_impl(const at::Tensor& grad_y, const OptionalTensor& x, const OptionalTensor& weight,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 const OptionalTensor& seed_tensor, at::IntArrayRef weight_size, bool has_bias,
                                 std::array<bool, 4> output_mask) {
  const auto [need_x, need_weight, need_bias, need_alpha] = output_mask;
  const Seed resolved = call_seed("noisy_linear_backward", seed, seed_tensor, grad_y);
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
    std::tie(grad_weight, grad_alpha) = weight_grads(grad_effective, alpha, sigma, lam, resolved, mask, need_alpha);
  }
  return {grad_x, grad_weight, grad_bias, grad_alpha};
}

OptionalTensor optional(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

// Where x, W, alpha and the seed tensor are kept for the backward: x and W only where a
// gradient needs them, as a plain layer saves them (x for dW', hence dW and dalpha; W to
// rebuild W' for dx and to recompute std(W) for dalpha). SavedVariable keeps autograd's check
// that none of them was modified in place before the backward (the seed tensor included:
// a layer that advanced it in place would otherwise rebuild other noise).
struct NoisyLayerSaved {
  torch::autograd::SavedVariable x, weight, alpha, seed_tensor;
  at::Tensor mask;  // a buffer, never differentiated
  double lam = 0.0;
  int64_t seed = 0;
  bool has_bias = false;
  c10::SmallVector<int64_t, 4> weight_size;  // inline: a heap vector costs a small layer more than a launch

  void save(const at::Tensor& x_in, const at::Tensor& weight_in, const OptionalTensor& bias, const at::Tensor& alpha_in,
            double lam_in, int64_t seed_in, const OptionalTensor& mask_in, const OptionalTensor& seed_tensor_in) {
    const bool need_x = x_in.requires_grad(), need_weight = weight_in.requires_grad();
    const bool need_alpha = alpha_in.requires_grad();
    if (need_weight || need_alpha) x = torch::autograd::SavedVariable(x_in, false);
    if (need_x || need_alpha) weight = torch::autograd::SavedVariable(weight_in, false);
    alpha = torch::autograd::SavedVariable(alpha_in, false);
    if (seed_tensor_in.has_value()) seed_tensor = torch::autograd::SavedVariable(*seed_tensor_in, false);
    mask = mask_in.value_or(at::Tensor());
    lam = lam_in;
    seed = seed_in;
    has_bias = bias.has_value();
    weight_size.assign(weight_in.sizes().begin(), weight_in.sizes().end());
  }

  void release() {
    x.reset_data();
    weight.reset_data();
    alpha.reset_data();
    seed_tensor.reset_data();
    mask.reset();
  }
};

// The layer's inputs in edge order (x, weight, bias, alpha): which gradients this backward computes.
std::array<bool, 4> needed_grads(const torch::autograd::Node& node, bool has_bias) {
  return {node.task_should_compute_output(0), node.task_should_compute_output(1),
          has_bias && node.task_should_compute_output(2), node.task_should_compute_output(has_bias ? 3 : 2)};
}

variable_list layer_grads(const Grads& grads, std::array<bool, 4> needed, bool has_bias) {
  variable_list result(has_bias ? 4 : 3);
  if (needed[0]) result[0] = std::get<0>(grads);
  if (needed[1]) result[1] = std::get<1>(grads);
  if (needed[2]) result[2] = std::get<2>(grads);
  if (needed[3]) result[has_bias ? 3 : 2] = std::get<3>(grads);
  return result;
}

struct NoisyConv2dBackward final : LayerBackward<NoisyLayerSaved, NoisyConv2dBackward> {
  c10::SmallVector<int64_t, 4> stride, padding, dilation, x_size;
  int64_t groups = 1;

  std::string name() const override { return "NoisyConv2dBackward"; }
  variable_list backward(const at::Tensor& grad_y, const c10::intrusive_ptr<torch::autograd::Node>& self) {
    static const auto op = op_handle<decltype(noisy_conv2d_backward_impl)>("robustkernels::noisy_conv2d_backward");
    const auto needed = needed_grads(*this, saved.has_bias);
    const Grads result =
        op.call(grad_y, unpacked(saved.x, self), unpacked(saved.weight, self), saved.alpha.unpack(self), saved.lam,
                saved.seed, optional(saved.mask), stride, padding, dilation, groups, unpacked(saved.seed_tensor, self),
                x_size, saved.weight_size, saved.has_bias, needed);
    return layer_grads(result, needed, saved.has_bias);
  }
};

struct NoisyLinearBackward final : LayerBackward<NoisyLayerSaved, NoisyLinearBackward> {
  std::string name() const override { return "NoisyLinearBackward"; }
  variable_list backward(const at::Tensor& grad_y, const c10::intrusive_ptr<torch::autograd::Node>& self) {
    static const auto op = op_handle<decltype(noisy_linear_backward_impl)>("robustkernels::noisy_linear_backward");
    const auto needed = needed_grads(*this, saved.has_bias);
    const Grads result = op.call(grad_y, unpacked(saved.x, self), unpacked(saved.weight, self),
                                 saved.alpha.unpack(self), saved.lam, saved.seed, optional(saved.mask),
                                 unpacked(saved.seed_tensor, self), saved.weight_size, saved.has_bias, needed);
    return layer_grads(result, needed, saved.has_bias);
  }
};

// The node of a layer's output, linked to x, W, the bias where given and alpha; null when no
// gradient flows.
template <typename Node>
c10::intrusive_ptr<Node> noisy_layer_node(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                          const at::Tensor& alpha) {
  if (!torch::autograd::compute_requires_grad(x, weight, bias, alpha)) return {};
  return layer_node<Node>(bias.has_value() ? torch::autograd::collect_next_edges(x, weight, *bias, alpha)
                                           : torch::autograd::collect_next_edges(x, weight, alpha));
}

at::Tensor noisy_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                 int64_t groups, const OptionalTensor& seed_tensor) {
  static const auto op = op_handle<decltype(noisy_conv2d_impl)>("robustkernels::noisy_conv2d");
  check_no_forward_grad("noisy_conv2d", x, weight, bias, alpha);
  auto node = noisy_layer_node<NoisyConv2dBackward>(x, weight, bias, alpha);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    y = op.call(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor);
  }
  if (node) {
    node->saved.save(x, weight, bias, alpha, lam, seed, mask, seed_tensor);
    node->stride.assign(stride.begin(), stride.end());
    node->padding.assign(padding.begin(), padding.end());
    node->dilation.assign(dilation.begin(), dilation.end());
    node->groups = groups;
    node->x_size.assign(x.sizes().begin(), x.sizes().end());
    torch::autograd::set_history(y, node);
  }
  return y;
}

at::Tensor noisy_linear_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                 const at::Tensor& alpha, double lam, int64_t seed, const OptionalTensor& mask,
                                 const OptionalTensor& seed_tensor) {
  static const auto op = op_handle<decltype(noisy_linear_impl)>("robustkernels::noisy_linear");
  check_no_forward_grad("noisy_linear", x, weight, bias, alpha);
  auto node = noisy_layer_node<NoisyLinearBackward>(x, weight, bias, alpha);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    y = op.call(x, weight, bias, alpha, lam, seed, mask, seed_tensor);
  }
  if (node) {
    node->saved.save(x, weight, bias, alpha, lam, seed, mask, seed_tensor);
    torch::autograd::set_history(y, node);
  }
  return y;
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
