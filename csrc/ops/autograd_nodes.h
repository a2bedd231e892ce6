// What the layer ops' autograd nodes (noisy_layers.cpp, path_conv_autograd.cpp) share. They are
// written like torch's generated nodes (typed members), not as torch::autograd::Function, whose
// context (an IValue map keyed by strings) cost more than a 1x1x4x4 layer's kernels (issue 13).
#pragma once

#include <ATen/FuncTorchTLS.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <mutex>
#include <optional>

namespace robustkernels {

// The backward ops have no autograd kernel: with no graph to record (no create_graph), the call
// skips autograd's boxed fallback and goes straight to the device kernel, as the forward does.
inline std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd_unless_differentiable() {
  if (at::GradMode::is_enabled()) return std::nullopt;
  return std::make_optional<at::AutoDispatchBelowADInplaceOrView>();
}

// The layer ops have no forward-mode derivative: a dual tensor among the inputs raises, as
// torch::autograd::Function did, instead of a silently zero tangent.
inline void check_no_forward_grad(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& alpha) {
  using torch::autograd::isFwGradDefined;
  TORCH_CHECK(!(isFwGradDefined(x) || isFwGradDefined(weight) || isFwGradDefined(bias) || isFwGradDefined(alpha)),
              op, ": forward-mode AD (jvp) is not implemented");
}

// A saved tensor, or nullopt where none was saved.
inline std::optional<at::Tensor> unpacked(const torch::autograd::SavedVariable& saved,
                                          const c10::intrusive_ptr<torch::autograd::Node>& node) {
  at::Tensor t = saved.unpack(node);
  return t.defined() ? std::optional<at::Tensor>(std::move(t)) : std::nullopt;
}

// A layer's backward node: `saved` holds what its forward kept (Saved::release() drops it);
// Derived::backward(grad_y, self) runs the layer's backward op and returns one gradient per edge.
// Here: the lock torch's nodes take, the undefined incoming gradient, and the call below autograd.
template <typename Saved, typename Derived>
struct LayerBackward : torch::autograd::TraceableFunction {
  Saved saved;

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    saved.release();
  }

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!grads[0].defined()) return torch::autograd::variable_list(num_outputs());
    const auto below_autograd = below_autograd_unless_differentiable();
    return static_cast<Derived*>(this)->backward(grads[0], getptr());
  }
};

// A new node for a layer's output linked to `edges` (its differentiable inputs in order), after
// the check torch::autograd::Function makes: no functorch transform support.
template <typename Node>
c10::intrusive_ptr<Node> layer_node(torch::autograd::edge_list edges) {
  if (const auto& functorch_tls = at::functorch::functorchTLSAccessor()) {
    functorch_tls->checkSupportsCppAutogradFunction();
  }
  auto node = c10::make_intrusive<Node>();
  node->set_next_edges(std::move(edges));
  return node;
}

}  // namespace robustkernels
