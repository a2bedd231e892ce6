// robustkernels::multires_stack and multires_stack_backward: the multi-resolution input stack as
// dispatcher ops with their autograd in C++ (no Python between the public function and the kernels).
//
// The forward is the stack kernel of x's device (multires_stack_fwd_kernel: C++ on CPU, the Triton
// kernel registered from robustkernels/ops/multires_stack.py on CUDA), which also returns the clip
// mask; autograd saves that mask and x, and the backward kernel regenerates the per-image contrast
// and shifts from the seed. The kernels check their arguments; use_backend switches both ops to
// their *_python twins.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../kernel_choice.h"
#include "noisy_weight_ops.h"  // call_seed

namespace robustkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;
using Forward = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, int64_t,
                                                   double, c10::string_view, double, double, c10::string_view, bool,
                                                   bool, int64_t, const OptionalTensor&);
using Backward = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                            at::IntArrayRef, int64_t, double, double, c10::string_view, bool, bool, int64_t,
                            const OptionalTensor&);
using Op = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::IntArrayRef, at::IntArrayRef, int64_t, double,
                                              c10::string_view, double, double, c10::string_view, bool, bool,
                                              int64_t, const OptionalTensor&);
using BackwardOp = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                              at::IntArrayRef, int64_t, double, double, c10::string_view, bool, bool, int64_t,
                              const OptionalTensor&);

std::tuple<at::Tensor, at::Tensor> multires_stack_impl(const at::Tensor& x, at::IntArrayRef heights,
                                                       at::IntArrayRef widths, int64_t jitter, double noise,
                                                       c10::string_view noise_kind, double contrast_low,
                                                       double contrast_high, c10::string_view interpolation,
                                                       bool antialias, bool adjust_contrast, int64_t seed,
                                                       const OptionalTensor& seed_tensor) {
  static const auto device = op_handle<Forward>("robustkernels::multires_stack_fwd_kernel");
  static const auto python = op_handle<Forward>("robustkernels::multires_stack_fwd_python");
  const Seed resolved = call_seed("multires_stack", seed, seed_tensor, x);
  return chosen_kernel(device, python)
      .call(x, heights, widths, jitter, noise, noise_kind, contrast_low, contrast_high, interpolation, antialias,
            adjust_contrast, resolved.value, resolved.device_offset);
}

at::Tensor multires_stack_backward_impl(const at::Tensor& grad, const at::Tensor& clip_mask, const at::Tensor& x,
                                        at::IntArrayRef heights, at::IntArrayRef widths, int64_t jitter,
                                        double contrast_low, double contrast_high, c10::string_view interpolation,
                                        bool antialias, bool adjust_contrast, int64_t seed,
                                        const OptionalTensor& seed_tensor) {
  static const auto device = op_handle<Backward>("robustkernels::multires_stack_bwd_kernel");
  static const auto python = op_handle<Backward>("robustkernels::multires_stack_bwd_python");
  const Seed resolved = call_seed("multires_stack_backward", seed, seed_tensor, x);
  return chosen_kernel(device, python)
      .call(grad, clip_mask, x, heights, widths, jitter, contrast_low, contrast_high, interpolation, antialias,
            adjust_contrast, resolved.value, resolved.device_offset);
}

struct MultiresStackFunction : torch::autograd::Function<MultiresStackFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::IntArrayRef heights,
                               at::IntArrayRef widths, int64_t jitter, double noise, c10::string_view noise_kind,
                               double contrast_low, double contrast_high, c10::string_view interpolation,
                               bool antialias, bool adjust_contrast, int64_t seed,
                               const OptionalTensor& seed_tensor) {
    static const auto op = op_handle<Op>("robustkernels::multires_stack");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, clip_mask] = op.call(x, heights, widths, jitter, noise, noise_kind, contrast_low, contrast_high,
                                    interpolation, antialias, adjust_contrast, seed, seed_tensor);
    ctx->mark_non_differentiable({clip_mask});
    if (x.requires_grad()) {
      // the seed tensor as a saved variable: changing it in place before backward raises
      ctx->save_for_backward({clip_mask, x, seed_tensor.value_or(at::Tensor())});
      auto& data = ctx->saved_data;
      data["heights"] = heights.vec();
      data["widths"] = widths.vec();
      data["jitter"] = jitter;
      data["contrast_low"] = contrast_low;
      data["contrast_high"] = contrast_high;
      data["interpolation"] = std::string(interpolation);
      data["antialias"] = antialias;
      data["adjust_contrast"] = adjust_contrast;
      data["seed"] = seed;
    }
    return {out, clip_mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto op = op_handle<BackwardOp>("robustkernels::multires_stack_backward");
    variable_list result(13);
    if (!grad_outputs[0].defined() || !ctx->needs_input_grad(0)) return result;
    const auto saved = ctx->get_saved_variables();
    auto& data = ctx->saved_data;
    const std::string interpolation = data["interpolation"].toStringRef();
    result[0] = op.call(grad_outputs[0], saved[0], saved[1], data["heights"].toIntVector(),
                        data["widths"].toIntVector(), data["jitter"].toInt(), data["contrast_low"].toDouble(),
                        data["contrast_high"].toDouble(), interpolation, data["antialias"].toBool(),
                        data["adjust_contrast"].toBool(), data["seed"].toInt(),
                        saved[2].defined() ? OptionalTensor(saved[2]) : std::nullopt);
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> multires_stack_autograd(const at::Tensor& x, at::IntArrayRef heights,
                                                           at::IntArrayRef widths, int64_t jitter, double noise,
                                                           c10::string_view noise_kind, double contrast_low,
                                                           double contrast_high, c10::string_view interpolation,
                                                           bool antialias, bool adjust_contrast, int64_t seed,
                                                           const OptionalTensor& seed_tensor) {
  auto outputs = MultiresStackFunction::apply(x, heights, widths, jitter, noise, noise_kind, contrast_low,
                                              contrast_high, interpolation, antialias, adjust_contrast, seed,
                                              seed_tensor);
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("multires_stack", &multires_stack_impl);
  m.impl("multires_stack_backward", &multires_stack_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("multires_stack", &multires_stack_impl);
  m.impl("multires_stack_backward", &multires_stack_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, Autograd, m) { m.impl("multires_stack", &multires_stack_autograd); }

}  // namespace robustkernels
