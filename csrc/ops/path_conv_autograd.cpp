// The autograd of robustkernels::path_conv2d / path_linear in C++: saves x (as a plain layer does,
// not a copy grouped by path), W, the mask, alpha and the forward's perm and counts, never W' or
// the noise; the backward op rebuilds them and groups x again.
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include "../kernel_choice.h"
#include "autograd_nodes.h"
#include "path_conv_ops.h"

namespace robustkernels {
namespace {

using torch::autograd::variable_list;

OptionalTensor optional(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

// Saved (see autograd_nodes.h): x, W, the mask, alpha, the forward's perm and counts, the seed
// tensor; never W' or the noise.
struct RoutedSaved {
  torch::autograd::SavedVariable x, weight, alpha, perm, counts, seed_tensor;
  at::Tensor mask;  // a buffer, never differentiated
  // inline storage for a few paths: heap vectors cost a small layer more than its kernels' launch
  c10::SmallVector<double, 4> lams;
  c10::SmallVector<int64_t, 4> seeds, segments;
  int64_t bias_entries = 0;
  bool alpha_given = false;

  void save(const at::Tensor& x_in, const at::Tensor& weight_in, const OptionalTensor& bias, const OptionalTensor& mask_in,
            const OptionalTensor& alpha_in, at::ArrayRef<double> lams_in, at::IntArrayRef seeds_in,
            at::IntArrayRef segments_in, const OptionalTensor& seed_tensor_in, const LayerOutputs& outputs) {
    x = torch::autograd::SavedVariable(x_in, false);
    weight = torch::autograd::SavedVariable(weight_in, false);
    if (alpha_in.has_value()) alpha = torch::autograd::SavedVariable(*alpha_in, false);
    perm = torch::autograd::SavedVariable(std::get<1>(outputs), false);
    counts = torch::autograd::SavedVariable(std::get<2>(outputs), false);
    if (seed_tensor_in.has_value()) seed_tensor = torch::autograd::SavedVariable(*seed_tensor_in, false);
    mask = mask_in.value_or(at::Tensor());
    lams.assign(lams_in.begin(), lams_in.end());
    seeds.assign(seeds_in.begin(), seeds_in.end());
    segments.assign(segments_in.begin(), segments_in.end());
    bias_entries = bias.has_value() ? bias->size(0) : 0;
    alpha_given = alpha_in.has_value();
  }

  void release() {
    for (auto* saved : {&x, &weight, &alpha, &perm, &counts, &seed_tensor}) saved->reset_data();
    mask.reset();
  }

  bool has_bias() const { return bias_entries > 0; }
  bool has_alpha() const { return alpha_given; }
};

// Edge order: x, weight, then bias and alpha where given.
Needs routed_needs(const torch::autograd::Node& node, const RoutedSaved& saved) {
  const size_t alpha_edge = 2 + saved.has_bias();
  return {node.task_should_compute_output(0), node.task_should_compute_output(1),
          saved.has_bias() && node.task_should_compute_output(2),
          saved.has_alpha() && node.task_should_compute_output(alpha_edge)};
}

variable_list routed_grads(const Outputs& grads, Needs needs, const RoutedSaved& saved) {
  variable_list result(2 + saved.has_bias() + saved.has_alpha());
  if (needs[0]) result[0] = std::get<0>(grads);
  if (needs[1]) result[1] = std::get<1>(grads);
  if (needs[2]) result[2] = std::get<2>(grads);
  if (needs[3]) result[2 + saved.has_bias()] = std::get<3>(grads);
  return result;
}

NeedsList needs_list(Needs needs) { return NeedsList({needs[0], needs[1], needs[2], needs[3]}); }

struct PathConv2dBackward final : LayerBackward<RoutedSaved, PathConv2dBackward> {
  c10::SmallVector<int64_t, 2> stride, padding, dilation;
  int64_t groups = 1;

  std::string name() const override { return "PathConv2dBackward"; }
  variable_list backward(const at::Tensor& grad_y, const c10::intrusive_ptr<torch::autograd::Node>& self) {
    static const auto op = op_handle<PathConv2dBackwardOp>("robustkernels::path_conv2d_backward");
    const Needs needs = routed_needs(*this, saved);
    const Outputs result = op.call(grad_y, saved.x.unpack(self), saved.weight.unpack(self), optional(saved.mask),
                                   unpacked(saved.alpha, self), saved.perm.unpack(self), saved.counts.unpack(self),
                                   saved.lams, saved.seeds, saved.segments, saved.bias_entries, stride, padding,
                                   dilation, groups, needs_list(needs), unpacked(saved.seed_tensor, self));
    return routed_grads(result, needs, saved);
  }
};

struct PathLinearBackward final : LayerBackward<RoutedSaved, PathLinearBackward> {
  std::string name() const override { return "PathLinearBackward"; }
  variable_list backward(const at::Tensor& grad_y, const c10::intrusive_ptr<torch::autograd::Node>& self) {
    static const auto op = op_handle<PathLinearBackwardOp>("robustkernels::path_linear_backward");
    const Needs needs = routed_needs(*this, saved);
    const Outputs result = op.call(grad_y, saved.x.unpack(self), saved.weight.unpack(self), optional(saved.mask),
                                   unpacked(saved.alpha, self), saved.perm.unpack(self), saved.counts.unpack(self),
                                   saved.lams, saved.seeds, saved.segments, saved.bias_entries, needs_list(needs),
                                   unpacked(saved.seed_tensor, self));
    return routed_grads(result, needs, saved);
  }
};

// The node of a routed layer's output, linked to x, W, and the bias and alpha where given; null
// when no gradient flows.
template <typename Node>
c10::intrusive_ptr<Node> routed_node(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                                     const OptionalTensor& alpha) {
  if (!torch::autograd::compute_requires_grad(x, weight, bias, alpha)) return {};
  torch::autograd::edge_list edges = torch::autograd::collect_next_edges(x, weight);
  for (const auto* extra : {&bias, &alpha}) {
    if (extra->has_value()) edges.push_back(torch::autograd::impl::gradient_edge(**extra));
  }
  return layer_node<Node>(std::move(edges));
}

LayerOutputs path_conv2d_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                             at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             const OptionalTensor& seed_tensor) {
  static const auto op = op_handle<PathConv2dOp>("robustkernels::path_conv2d");
  check_no_forward_grad("path_conv2d", x, weight, bias, alpha);
  auto node = routed_node<PathConv2dBackward>(x, weight, bias, alpha);
  LayerOutputs outputs;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    outputs = op.call(x, weight, bias, mask, alpha, lams, seeds, route, segments, stride, padding, dilation, groups,
                      seed_tensor);
  }
  if (node) {
    node->saved.save(x, weight, bias, mask, alpha, lams, seeds, segments, seed_tensor, outputs);
    node->stride.assign(stride.begin(), stride.end());
    node->padding.assign(padding.begin(), padding.end());
    node->dilation.assign(dilation.begin(), dilation.end());
    node->groups = groups;
    torch::autograd::set_history(std::get<0>(outputs), node);
  }
  return outputs;
}

LayerOutputs path_linear_autograd(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                             const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                             at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                             const OptionalTensor& seed_tensor) {
  static const auto op = op_handle<PathLinearOp>("robustkernels::path_linear");
  check_no_forward_grad("path_linear", x, weight, bias, alpha);
  auto node = routed_node<PathLinearBackward>(x, weight, bias, alpha);
  LayerOutputs outputs;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    outputs = op.call(x, weight, bias, mask, alpha, lams, seeds, route, segments, seed_tensor);
  }
  if (node) {
    node->saved.save(x, weight, bias, mask, alpha, lams, seeds, segments, seed_tensor, outputs);
    torch::autograd::set_history(std::get<0>(outputs), node);
  }
  return outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) {
  m.impl("path_conv2d", &path_conv2d_autograd);
  m.impl("path_linear", &path_linear_autograd);
}

}  // namespace robustkernels
