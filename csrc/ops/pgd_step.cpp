// robustkernels::pgd_step: one attack step as a dispatcher op with its autograd in C++.
//
// The forward is the fused step kernel of the tensors' device (pgd_step_fwd_kernel). Attacks
// never differentiate through their steps, so the backward is no kernel: the autograd node
// calls robustkernels::pgd_step_backward, the closed-form derivative written with torch ops
// (robustkernels/ops/pgd_step.py), which gradcheck, opcheck and methods that do differentiate
// through a step use.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../kernel_choice.h"

namespace robustkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using StepKernel = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                              c10::string_view, double, double, bool);
using StepBackward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
    c10::string_view, double, double, bool, std::array<bool, 4>);

at::Tensor pgd_step_impl(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x_orig,
                         const at::Tensor& step, double eps, c10::string_view norm, double lo, double hi,
                         bool normalize) {
  static const auto device = op_handle<StepKernel>("robustkernels::pgd_step_fwd_kernel");
  static const auto python = op_handle<StepKernel>("robustkernels::pgd_step_fwd_python");
  return chosen_kernel(device, python).call(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize);
}

struct PgdStepFunction : torch::autograd::Function<PgdStepFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x_adv, const at::Tensor& grad,
                            const at::Tensor& x_orig, const at::Tensor& step, double eps, c10::string_view norm,
                            double lo, double hi, bool normalize) {
    static const auto op = op_handle<StepKernel>("robustkernels::pgd_step");
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor out = op.call(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize);
    if (x_adv.requires_grad() || grad.requires_grad() || x_orig.requires_grad() || step.requires_grad()) {
      ctx->save_for_backward({x_adv, grad, x_orig, step});
      auto& data = ctx->saved_data;
      data["eps"] = eps;
      data["norm"] = std::string(norm);
      data["lo"] = lo;
      data["hi"] = hi;
      data["normalize"] = normalize;
    }
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<StepBackward>("robustkernels::pgd_step_backward");
    const std::array<bool, 4> needed{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
                                     ctx->needs_input_grad(3)};
    variable_list result(9);
    if (!grad_outputs[0].defined() || !(needed[0] || needed[1] || needed[2] || needed[3])) return result;
    const auto saved = ctx->get_saved_variables();
    auto& data = ctx->saved_data;
    const std::string norm = data["norm"].toStringRef();
    auto [d_x, d_grad, d_orig, d_step] =
        op.call(grad_outputs[0], saved[0], saved[1], saved[2], saved[3], data["eps"].toDouble(), norm,
                data["lo"].toDouble(), data["hi"].toDouble(), data["normalize"].toBool(), needed);
    const at::Tensor grads[] = {d_x, d_grad, d_orig, d_step};
    for (size_t i = 0; i < 4; ++i) {
      if (needed[i]) result[i] = grads[i];
    }
    return result;
  }
};

at::Tensor pgd_step_autograd(const at::Tensor& x_adv, const at::Tensor& grad, const at::Tensor& x_orig,
                             const at::Tensor& step, double eps, c10::string_view norm, double lo, double hi,
                             bool normalize) {
  return PgdStepFunction::apply(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize);
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) { m.impl("pgd_step", &pgd_step_impl); }

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) { m.impl("pgd_step", &pgd_step_impl); }

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) { m.impl("pgd_step", &pgd_step_autograd); }

}  // namespace robustkernels
