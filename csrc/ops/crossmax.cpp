// robustkernels::crossmax and crossmax_backward: CrossMax as dispatcher ops with their autograd in
// C++ (no Python between the public function and the kernels).
//
// The forward is the CrossMax kernel of the logits' device (crossmax_fwd_kernel: C++ on CPU, the
// Triton kernel registered from robustkernels/ops/crossmax.py on CUDA); its int32 index outputs
// are what the backward kernel (crossmax_bwd_kernel) reads, saved instead of recomputed. The
// kernels check their arguments; use_backend switches both ops to their *_python twins.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../kernel_choice.h"

namespace robustkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Forward = Outputs(const at::Tensor&, int64_t, c10::string_view);
using Backward = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);
using BackwardKernel = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool);

Outputs crossmax_impl(const at::Tensor& logits, int64_t k, c10::string_view reduction) {
  static const auto device = op_handle<Forward>("robustkernels::crossmax_fwd_kernel");
  static const auto python = op_handle<Forward>("robustkernels::crossmax_fwd_python");
  return chosen_kernel(device, python).call(logits, k, reduction);
}

// The backward kernel; trusted_indices: they are the forward kernel's own (no range check).
at::Tensor backward_kernel(const at::Tensor& grad, const at::Tensor& class_idx, const at::Tensor& pred_idx,
                           const at::Tensor& sel_idx, bool trusted_indices) {
  static const auto device = op_handle<BackwardKernel>("robustkernels::crossmax_bwd_kernel");
  static const auto python = op_handle<BackwardKernel>("robustkernels::crossmax_bwd_python");
  return chosen_kernel(device, python).call(grad, class_idx, pred_idx, sel_idx, trusted_indices);
}

at::Tensor crossmax_backward_impl(const at::Tensor& grad, const at::Tensor& class_idx, const at::Tensor& pred_idx,
                                  const at::Tensor& sel_idx) {
  return backward_kernel(grad, class_idx, pred_idx, sel_idx, /*trusted_indices=*/false);
}

struct CrossmaxFunction : torch::autograd::Function<CrossmaxFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits, int64_t k,
                               c10::string_view reduction) {
    static const auto op = op_handle<Forward>("robustkernels::crossmax");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, class_idx, pred_idx, sel_idx] = op.call(logits, k, reduction);
    if (logits.requires_grad()) ctx->save_for_backward({class_idx, pred_idx, sel_idx});
    ctx->mark_non_differentiable({class_idx, pred_idx, sel_idx});
    return {out, class_idx, pred_idx, sel_idx};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<Backward>("robustkernels::crossmax_backward");
    variable_list result(3);
    if (!grad_outputs[0].defined() || !ctx->needs_input_grad(0)) return result;
    const auto saved = ctx->get_saved_variables();
    if (at::GradMode::is_enabled()) {  // a graph to record (create_graph): through the op
      result[0] = op.call(grad_outputs[0], saved[0], saved[1], saved[2]);
      return result;
    }
    // the forward kernel's own indices: no range check (on a GPU, a host read per backward)
    at::AutoDispatchBelowADInplaceOrView guard;
    result[0] = backward_kernel(grad_outputs[0], saved[0], saved[1], saved[2], /*trusted_indices=*/true);
    return result;
  }
};

Outputs crossmax_autograd(const at::Tensor& logits, int64_t k, c10::string_view reduction) {
  auto outputs = CrossmaxFunction::apply(logits, k, reduction);
  return {outputs[0], outputs[1], outputs[2], outputs[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("crossmax", &crossmax_impl);
  m.impl("crossmax_backward", &crossmax_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("crossmax", &crossmax_impl);
  m.impl("crossmax_backward", &crossmax_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) { m.impl("crossmax", &crossmax_autograd); }

}  // namespace robustkernels
