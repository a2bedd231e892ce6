// robustkernels::crossmax and crossmax_backward: CrossMax as dispatcher ops with their autograd in
// C++ (no Python between the public function and the kernels).
//
// The forward is the CrossMax kernel of the logits' device (crossmax_fwd_kernel: C++ on CPU, the
// Triton kernel registered from robustkernels/ops/crossmax.py on CUDA); its int32 index outputs
// are what the backward kernel (crossmax_bwd_kernel) reads, saved instead of recomputed. The
// kernels check their arguments; use_backend switches both ops to their *_python twins.
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

#include "../kernel_choice.h"

namespace robustkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Forward = Outputs(const at::Tensor&, int64_t, c10::string_view);
using Backward = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&);

Outputs crossmax_impl(const at::Tensor& logits, int64_t k, c10::string_view reduction) {
  static const auto device = op_handle<Forward>("robustkernels::crossmax_fwd_kernel");
  static const auto python = op_handle<Forward>("robustkernels::crossmax_fwd_python");
  return chosen_kernel(device, python).call(logits, k, reduction);
}

at::Tensor backward_kernel(const at::Tensor& grad, const at::Tensor& class_idx, const at::Tensor& pred_idx,
                           const at::Tensor& sel_idx) {
  static const auto device = op_handle<Backward>("robustkernels::crossmax_bwd_kernel");
  static const auto python = op_handle<Backward>("robustkernels::crossmax_bwd_python");
  return chosen_kernel(device, python).call(grad, class_idx, pred_idx, sel_idx);
}

// The index ranges of a direct call on a GPU, with one host read: the Triton kernel reads through
// the indices unchecked (the CPU kernel checks its own). The autograd node skips this op and its
// read (a stream sync per backward): its indices come from the forward kernel. Shapes, dtypes and
// devices are the kernel's to check, with their own messages.
void check_gpu_index_ranges(const at::Tensor& grad, const at::Tensor& class_idx, const at::Tensor& pred_idx,
                            const at::Tensor& sel_idx) {
  if (grad.is_cpu() || grad.dim() != 2 || class_idx.dim() != 2 || pred_idx.dim() != 2 || sel_idx.dim() != 3) return;
  struct Bound {
    const char* name;
    const at::Tensor& index;
    int64_t bound;
  };
  const Bound bounds[] = {{"class_idx", class_idx, grad.size(1)},
                          {"pred_idx", pred_idx, class_idx.size(0)},
                          {"sel_idx", sel_idx, class_idx.size(0)}};
  std::vector<at::Tensor> spans;
  for (const Bound& b : bounds) {
    if (b.index.device() != grad.device() || b.index.scalar_type() != at::kInt) return;
    if (b.index.numel()) spans.push_back(at::stack({b.index.min(), b.index.max()}));
  }
  if (spans.empty()) return;
  const at::Tensor host = at::cat(spans).to(at::kCPU, at::kLong);
  const int64_t* values = host.const_data_ptr<int64_t>();
  for (const Bound& b : bounds) {
    if (!b.index.numel()) continue;
    const int64_t low = values[0], high = values[1];
    values += 2;
    TORCH_CHECK_VALUE(low >= 0 && high < b.bound, "robustkernels.crossmax_backward: ", b.name,
                      " holds an index out of range [0, ", b.bound, "): its values span [", low, ", ", high, "]");
  }
}

at::Tensor crossmax_backward_impl(const at::Tensor& grad, const at::Tensor& class_idx, const at::Tensor& pred_idx,
                                  const at::Tensor& sel_idx) {
  check_gpu_index_ranges(grad, class_idx, pred_idx, sel_idx);
  return backward_kernel(grad, class_idx, pred_idx, sel_idx);
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
    } else {  // the forward kernel's own indices: straight to the kernel, no range check
      at::AutoDispatchBelowADInplaceOrView guard;
      result[0] = backward_kernel(grad_outputs[0], saved[0], saved[1], saved[2]);
    }
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
