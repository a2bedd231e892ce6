// Schemas of the ops. Device kernels (*_kernel) live in csrc/cpu/*.cpp and
// csrc/cuda/*_launcher.cpp (Triton ones are registered for CUDA from robustkernels/ops/);
// the composite ops (every public op: the noisy weight family, the routed multi-path family,
// crossmax, multires_stack and pgd_step), with their autograd, in csrc/ops/*.cpp; random_route is
// a torch.library.custom_op in robustkernels/ops/.
// The Python module that loads them is csrc/python_module.cpp.
#include <torch/library.h>

TORCH_LIBRARY(robustkernels, m) {
  // The noisy weight family (csrc/ops/noisy_weight.cpp, noisy_layers.cpp). The seed is `seed`
  // plus the value of seed_tensor when one is given: a 0-dim int64 tensor on the CPU (read on the
  // host) or on the weight's GPU (added by the kernels on the device: graph-capturable).
  m.def("noisy_weight(Tensor weight, Tensor alpha, float lam, int seed, Tensor? mask, Tensor? seed_tensor=None) "
        "-> (Tensor, Tensor)");
  m.def("noisy_weight_backward(Tensor grad, Tensor alpha, Tensor sigma, float lam, int seed, Tensor? mask, "
        "bool need_alpha_grad, Tensor? seed_tensor=None) -> (Tensor, Tensor)");
  m.def("noisy_conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor alpha, float lam, int seed, Tensor? mask, "
        "int[] stride, int[] padding, int[] dilation, int groups, Tensor? seed_tensor=None) -> Tensor");
  // (dx, dW, dbias, dalpha), each undefined (None in Python) where output_mask is false, as
  // aten::convolution_backward's; x and weight may be absent
  // where no requested gradient needs them (x_size and weight_size give their shapes).
  m.def("noisy_conv2d_backward(Tensor grad_y, Tensor? x, Tensor? weight, Tensor alpha, float lam, int seed, "
        "Tensor? mask, int[] stride, int[] padding, int[] dilation, int groups, Tensor? seed_tensor, int[] x_size, "
        "int[] weight_size, bool has_bias, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("noisy_linear(Tensor x, Tensor weight, Tensor? bias, Tensor alpha, float lam, int seed, Tensor? mask, "
        "Tensor? seed_tensor=None) -> Tensor");
  m.def("noisy_linear_backward(Tensor grad_y, Tensor? x, Tensor? weight, Tensor alpha, float lam, int seed, "
        "Tensor? mask, Tensor? seed_tensor, int[] weight_size, bool has_bias, bool[4] output_mask) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // The weight kernels as the backend chosen in Python runs them (robustkernels.use_backend; see
  // csrc/kernel_choice.h): the composite ops call these instead of the *_kernel ops while
  // set_python_kernels is on.
  m.def("noisy_weight_fwd_python(Tensor weight, Tensor alpha, float lam, int seed, Tensor? mask, "
        "Tensor? seed_offset=None) -> (Tensor, Tensor)");
  m.def("noisy_weight_bwd_python(Tensor grad, Tensor alpha, Tensor sigma, float lam, int seed, Tensor? mask, "
        "bool need_alpha_grad, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  m.def("set_python_kernels(bool on) -> ()");
  // The routed multi-path family (csrc/ops/path_weights.cpp, path_conv*.cpp). weight is [S, ...]
  // with S = 1 (one weight shared by the P paths) or P; lams and seeds hold one value per path.
  m.def("path_weights(Tensor weight, Tensor? mask, Tensor? alpha, float[] lams, int[] seeds, Tensor? counts, "
        "Tensor? seed_tensor=None) -> (Tensor, Tensor)");
  m.def("path_weights_backward(Tensor grad, int entries, Tensor? mask, Tensor? alpha, Tensor sigma, float[] lams, "
        "int[] seeds, Tensor? counts, bool need_alpha_grad, Tensor? seed_tensor=None) -> (Tensor, Tensor)");
  m.def("route_sort(Tensor route, int num_paths) -> (Tensor, Tensor)");
  // y[b] = layer(x[b], W'_{route[b]}) + bias_{route[b]}, with a route tensor [B] or segment sizes
  // (path p takes the next segments[p] samples); returns (y, perm, counts).
  m.def("path_conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor? mask, Tensor? alpha, float[] lams, int[] seeds, "
        "Tensor? route, int[] segments, int[] stride, int[] padding, int[] dilation, int groups, "
        "Tensor? seed_tensor=None) -> (Tensor, Tensor, Tensor)");
  // (dx, dW, dbias, dalpha), undefined (None in Python) where needs (4 flags) is false; x is the
  // layer's input.
  m.def("path_conv2d_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor? mask, Tensor? alpha, Tensor perm, "
        "Tensor counts, float[] lams, int[] seeds, int[] segments, int bias_entries, int[] stride, int[] padding, "
        "int[] dilation, int groups, bool[] needs, Tensor? seed_tensor=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("path_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? mask, Tensor? alpha, float[] lams, int[] seeds, "
        "Tensor? route, int[] segments, Tensor? seed_tensor=None) -> (Tensor, Tensor, Tensor)");
  m.def("path_linear_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor? mask, Tensor? alpha, Tensor perm, "
        "Tensor counts, float[] lams, int[] seeds, int[] segments, int bias_entries, bool[] needs, "
        "Tensor? seed_tensor=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("path_weights_fwd_python(Tensor weight, Tensor? mask, Tensor? alpha, float[] lams, int[] seeds, "
        "Tensor? counts, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  m.def("path_weights_bwd_python(Tensor grad_out, int entries, Tensor? mask, Tensor? alpha, Tensor sigma, "
        "float[] lams, int[] seeds, Tensor? counts, bool need_alpha_grad, Tensor? seed_offset=None) "
        "-> (Tensor, Tensor)");
  m.def("route_sort_python(Tensor route, int num_paths) -> (Tensor, Tensor)");
  // One attack step (csrc/ops/pgd_step.cpp): the fused kernel below; its backward, the
  // closed-form derivative in torch ops (robustkernels/ops/pgd_step.py), gives the gradients
  // output_mask asks for (empty tensors elsewhere).
  m.def("pgd_step(Tensor x_adv, Tensor grad, Tensor x_orig, Tensor step, float eps, str norm, float lo, float hi, "
        "bool normalize) -> Tensor");
  m.def("pgd_step_backward(Tensor grad_out, Tensor x_adv, Tensor grad, Tensor x_orig, Tensor step, float eps, "
        "str norm, float lo, float hi, bool normalize, bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("pgd_step_fwd_python(Tensor x_adv, Tensor grad, Tensor x_orig, Tensor step, float eps, str norm, "
        "float lo, float hi, bool normalize) -> Tensor");
  // W' = M * (W + lam * alpha * std(W) * eta(seed)); returns (W', std(W)). The seed is `seed` plus,
  // where given, seed_offset (a 0-dim int64 tensor on the weight's device, added there).
  m.def("noisy_weight_fwd_kernel(Tensor weight, Tensor alpha, float lam, int seed, "
        "Tensor? mask, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  // (dW, dalpha) from dW'; dalpha is empty when need_alpha_grad is false.
  m.def("noisy_weight_bwd_kernel(Tensor grad_out, Tensor alpha, Tensor sigma, float lam, "
        "int seed, Tensor? mask, bool need_alpha_grad, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  // float32 tensor shaped like `like` holding philox_normal(seed, offset + i).
  m.def("philox_normal_kernel(Tensor like, int seed, int offset) -> Tensor");
  // CrossMax (csrc/ops/crossmax.cpp) over logits [N, B, C]: (out [B, C], argmax over classes [N, B],
  // argmax over predictors [B, C], selected predictors [S, B, C]); int32 indices, which the
  // backward, d logits [N, B, C] from d out [B, C], reads. The *_python twins run the backend
  // chosen in Python (see noisy_weight_fwd_python).
  m.def("crossmax(Tensor logits, int k, str reduction) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("crossmax_backward(Tensor grad, Tensor class_idx, Tensor pred_idx, Tensor sel_idx) -> Tensor");
  m.def("crossmax_fwd_python(Tensor logits, int k, str reduction) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("crossmax_bwd_python(Tensor grad, Tensor class_idx, Tensor pred_idx, Tensor sel_idx, "
        "bool trusted_indices=False) -> Tensor");
  m.def("crossmax_fwd_kernel(Tensor logits, int k, str reduction) -> (Tensor, Tensor, Tensor, Tensor)");
  // trusted_indices: the indices are the forward kernel's own (the autograd node's call), so the
  // GPU kernel skips their range check, a host read (a direct call's indices are checked).
  m.def("crossmax_bwd_kernel(Tensor grad_out, Tensor class_idx, Tensor pred_idx, Tensor sel_idx, "
        "bool trusted_indices=False) -> Tensor");
  // Multi-resolution stack (csrc/ops/multires_stack.cpp) of x [B, C, H, W]: (out [B, C * V, H, W],
  // clip_mask uint8 [B, C * V, H, ceil(W / 8)]), view v at low resolution heights[v] x widths[v];
  // the backward gives dx [B, C, H, W] from d out, the forward's clip_mask and its input x
  // (adjust_contrast's clamp). The kernels build the resize tables and noise offsets themselves.
  // The seed is `seed` plus the value of seed_tensor when one is given: a 0-dim int64 tensor on the
  // CPU (read on the host) or on x's GPU (the kernels' seed_offset, added on the device).
  m.def("multires_stack(Tensor x, int[] heights, int[] widths, int jitter, float noise, str noise_kind, "
        "float contrast_low, float contrast_high, str interpolation, bool antialias, bool adjust_contrast, "
        "int seed, Tensor? seed_tensor=None) -> (Tensor, Tensor)");
  m.def("multires_stack_backward(Tensor grad, Tensor clip_mask, Tensor x, int[] heights, int[] widths, "
        "int jitter, float contrast_low, float contrast_high, str interpolation, bool antialias, "
        "bool adjust_contrast, int seed, Tensor? seed_tensor=None) -> Tensor");
  m.def("multires_stack_fwd_python(Tensor x, int[] heights, int[] widths, int jitter, float noise, "
        "str noise_kind, float contrast_low, float contrast_high, str interpolation, bool antialias, "
        "bool adjust_contrast, int seed, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  m.def("multires_stack_bwd_python(Tensor grad, Tensor clip_mask, Tensor x, int[] heights, int[] widths, "
        "int jitter, float contrast_low, float contrast_high, str interpolation, bool antialias, "
        "bool adjust_contrast, int seed, Tensor? seed_offset=None) -> Tensor");
  m.def("multires_stack_fwd_kernel(Tensor x, int[] heights, int[] widths, int jitter, float noise, "
        "str noise_kind, float contrast_low, float contrast_high, str interpolation, bool antialias, "
        "bool adjust_contrast, int seed, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  m.def("multires_stack_bwd_kernel(Tensor grad_out, Tensor clip_mask, Tensor x, int[] heights, int[] widths, "
        "int jitter, float contrast_low, float contrast_high, str interpolation, bool antialias, "
        "bool adjust_contrast, int seed, Tensor? seed_offset=None) -> Tensor");
  // One attack step: x_adv + step[b] * sign(grad) (linf) or grad / ||grad_b|| (l2), or
  // + step[b] * grad (normalize false), projected onto the eps ball around x_orig, clamped to [lo, hi].
  m.def("pgd_step_fwd_kernel(Tensor x_adv, Tensor grad, Tensor x_orig, Tensor step, float eps, str norm, "
        "float lo, float hi, bool normalize) -> Tensor");
  // Routed multi-path layers. Every path's W'_p = M_p * (W_s(p) + lam_p * alpha_p * std(W_s(p)) * eta(seed_p)),
  // weight [S, C_out, ...] with S = 1 (shared) or P; returns (W' [P, C_out, ...], std [S]).
  // Paths whose count is 0 get zeros. Every seed is offset by seed_offset where given (a 0-dim int64
  // tensor on the weight's device, added there).
  m.def("path_weights_fwd_kernel(Tensor weight, Tensor? mask, Tensor? alpha, float[] lams, int[] seeds, "
        "Tensor? counts, Tensor? seed_offset=None) -> (Tensor, Tensor)");
  // (dW [entries, ...], dalpha [P, A]) from dW' [P, ...]; dalpha is empty when need_alpha_grad is false.
  m.def("path_weights_bwd_kernel(Tensor grad_out, int entries, Tensor? mask, Tensor? alpha, Tensor sigma, "
        "float[] lams, int[] seeds, Tensor? counts, bool need_alpha_grad, Tensor? seed_offset=None) "
        "-> (Tensor, Tensor)");
  // The instruction-set path of the CPU kernels (csrc/cpu/cpu_isa.h): choose one
  // ('scalar', 'avx2', 'avx512' or 'best'), read the choice, list what this CPU supports.
  m.def("set_cpu_isa(str isa) -> ()");
  m.def("cpu_isa() -> str");
  m.def("supported_cpu_isas() -> str[]");
  // Stable counting sort of a route [B]: (counts [P] int64, perm [B] int64, samples grouped by path).
  m.def("route_sort_kernel(Tensor route, int num_paths) -> (Tensor, Tensor)");
}
