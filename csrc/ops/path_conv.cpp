// robustkernels::path_conv2d / path_linear and their backward ops (their autograd: path_conv_autograd.cpp).
//
// Forward: the samples are grouped by path (the route sort and one small read of the per-path
// counts for a route tensor; nothing for segments), every used path's W' is built in one kernel
// call, each group runs through the platform convolution / matmul, and the results return to
// the batch order with one index_copy_ per path. Backward: W' is rebuilt and the noise
// regenerated (neither is saved); the input and the output gradient are grouped again (only
// where more than one path holds samples: autograd saves x itself, as a plain layer does, not a
// grouped copy); each group's platform backward gives its dx and dW'_p; dW'_p of unused paths
// stay zero, so their dW is exactly zero. The ops also return the perm and the counts.
#include <torch/library.h>

#include <algorithm>
#include <cstring>

#include "../arg_checks.h"
#include "../kernel_choice.h"
#include "noisy_weight_ops.h"
#include "path_conv_ops.h"
#include "path_groups.h"

namespace robustkernels {
namespace {


// Convolution arguments (views of the op's own, valid for the call); empty for the linear layer.
struct ConvArgs {
  at::IntArrayRef stride, padding, dilation;
  int64_t groups = 1;
  bool linear() const { return stride.empty(); }
};

at::Tensor layer_forward(const at::Tensor& x, const at::Tensor& w, const OptionalTensor& b, const ConvArgs& conv) {
  if (conv.linear()) return at::linear(x, w, b);
  return at::conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups);
}

// (dx, dW', db) of one group, undefined where not asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                              const at::Tensor& w, const ConvArgs& conv,
                                                              std::array<bool, 3> needs) {
  if (conv.linear()) {
    const at::Tensor rows = grad_y.reshape({-1, grad_y.size(-1)});
    at::Tensor gx, gw, gb;
    if (needs[0]) gx = at::matmul(grad_y, w);
    if (needs[1]) gw = rows.t().mm(x.reshape({-1, x.size(-1)}));
    if (needs[2]) gb = rows.sum(0);
    return {gx, gw, gb};
  }
  const int64_t out_channels = w.size(0);
  return at::convolution_backward(
      grad_y, x, w, needs[2] ? at::OptionalIntArrayRef(at::IntArrayRef(&out_channels, 1)) : std::nullopt,
      conv.stride, conv.padding, conv.dilation, false, {0, 0}, conv.groups, needs);
}

// x, bias and the routing of a layer call (path_weights' kernel checks the weight, the mask,
// alpha, lams and seeds); returns the number of paths.
int64_t check_layer_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                         at::ArrayRef<double> lams, const OptionalTensor& route, at::IntArrayRef segments,
                         const ConvArgs& conv) {
  check_kernel_float(op, "weight", weight);
  check_same_dtype(op, "x", x, "weight", weight);
  check_same_device(op, "x", x, "weight", weight);
  const int64_t paths = static_cast<int64_t>(lams.size());
  if (conv.linear()) {
    TORCH_CHECK_VALUE(x.dim() >= 2 && x.dim() <= 8, op, ": x must have rank 2 to 8, got shape ", x.sizes());
    TORCH_CHECK_VALUE(weight.dim() == 3 && x.size(-1) == weight.size(2), op,
                      ": weight must be [S, out, in] with in = x.shape[-1] = ", x.size(-1), ", got ", weight.sizes());
  } else {
    TORCH_CHECK_VALUE(x.dim() == 4, op, ": x must have rank 4, got shape ", x.sizes());
    TORCH_CHECK_VALUE(weight.dim() == 5, op, ": weight must be [S, C_out, C_in/groups, kh, kw], got ",
                      weight.sizes());
    TORCH_CHECK_VALUE(conv.groups >= 1 && x.size(1) == weight.size(2) * conv.groups &&
                          weight.size(1) % conv.groups == 0,
                      op, ": x has ", x.size(1), " channels but weight ", weight.sizes(), " with groups=", conv.groups,
                      " expects ", weight.size(2) * conv.groups);
  }
  if (bias.has_value()) {
    check_same_dtype(op, "bias", *bias, "weight", weight);
    check_same_device(op, "bias", *bias, "weight", weight);
    TORCH_CHECK_VALUE(bias->dim() == 2 && (bias->size(0) == 1 || bias->size(0) == paths) &&
                          bias->size(1) == weight.size(1),
                      op, ": bias must have shape [1 or ", paths, ", ", weight.size(1), "], got ", bias->sizes());
  }
  const int64_t batch = x.size(0);
  if (route.has_value()) {
    TORCH_CHECK_TYPE(route->scalar_type() == at::kInt || route->scalar_type() == at::kLong, op,
                     ": route must be an int32 or int64 tensor, got ", dtype_name(route->scalar_type()));
    TORCH_CHECK_VALUE(route->dim() == 1 && route->size(0) == batch, op,
                      ": route must hold one path per sample (", batch, "), got shape ", route->sizes());
    check_same_device(op, "route", *route, "x", x);
    TORCH_CHECK_VALUE(segments.empty(), op, ": give either a route tensor or segments, not both");
  } else {
    int64_t total = 0;
    bool valid = static_cast<int64_t>(segments.size()) == paths;
    for (int64_t size : segments) {
      valid = valid && size >= 0;
      total += size;
    }
    TORCH_CHECK_VALUE(valid && total == batch, op, ": segments must be ", paths,
                      " non-negative sizes summing to the batch ", batch, ", got ", segments);
  }
  return paths;
}

OptionalTensor bias_of(const OptionalTensor& bias, int64_t path) {
  if (!bias.has_value()) return std::nullopt;
  return (*bias)[bias->size(0) == 1 ? 0 : path];
}

// A bank with neither masks nor noise (an EIO gated layer) is its own W': no weight kernel runs,
// forward or backward, and dW' is dW. Its checks are the weight kernel's that still apply.
bool is_plain_bank(const char* op, const at::Tensor& weight, const OptionalTensor& mask, const OptionalTensor& alpha,
                   at::ArrayRef<double> lams, at::IntArrayRef seeds) {
  if (mask.has_value() || alpha.has_value()) return false;
  const int64_t paths = static_cast<int64_t>(lams.size());
  TORCH_CHECK_VALUE(paths >= 1, op, ": lams must hold one value per path, got none");
  TORCH_CHECK_VALUE(static_cast<int64_t>(seeds.size()) == paths, op, ": seeds must hold one value per path (", paths,
                    "), got ", seeds.size());
  TORCH_CHECK_VALUE(weight.numel() > 0 && (weight.size(0) == 1 || weight.size(0) == paths), op,
                    ": weight must be a non-empty bank of 1 or ", paths, " (one per path) entries, got shape ",
                    weight.sizes());
  for (double lam : lams) TORCH_CHECK_VALUE(lam == 0.0, op, ": alpha is required when a path has lam != 0");
  return true;
}

// dW' of a bank [S, ...] whose only used path is p: dW'_p in its entry (a shared entry is its own
// sum), zeros in the others. Small CPU banks are filled directly: zeros_like, select and add_
// through the dispatcher cost more than a small layer's kernels.
at::Tensor one_path_bank_grad(const at::Tensor& grad_entry, int64_t path, const at::Tensor& bank) {
  if (bank.size(0) == 1) return grad_entry.unsqueeze(0);
  constexpr int64_t kSmall = 32768;  // at::internal::GRAIN_SIZE: below it a fill runs on one thread anyway
  if (grad_entry.is_cpu() && grad_entry.is_contiguous() && bank.numel() <= kSmall) {
    at::Tensor grad = at::empty(bank.sizes(), grad_entry.options());
    char* base = static_cast<char*>(grad.data_ptr());
    const size_t entry_bytes = grad_entry.nbytes();
    std::memset(base, 0, grad.nbytes());
    std::memcpy(base + path * entry_bytes, grad_entry.const_data_ptr(), entry_bytes);
    return grad;
  }
  at::Tensor grad = at::zeros(bank.sizes(), grad_entry.options());
  grad.select(0, path).copy_(grad_entry);
  return grad;
}

LayerOutputs routed_forward(const char* op, const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                       const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                       at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                       const ConvArgs& conv, const OptionalTensor& seed_tensor) {
  const int64_t paths = check_layer_args(op, x, weight, bias, lams, route, segments, conv);
  const auto resolved = resolved_seeds(op, seeds, seed_tensor, weight);
  const bool routed = route.has_value();
  at::Tensor counts, perm, grouped;
  Sizes sizes;
  if (routed) {
    std::tie(counts, perm) = route_sort_kernel(*route, paths);
    sizes = group_sizes(op, counts, x.size(0), paths);
    // one group holds the whole batch: the stable sort left it in batch order
    grouped = used_groups(sizes) > 1 ? gather_rows(x, perm) : x;
  } else {
    counts = int64_tensor(segments, x.device());
    perm = int64_tensor({}, x.device());
    sizes.assign(segments.begin(), segments.end());
    grouped = x;
  }
  const at::Tensor effective = is_plain_bank(op, weight, mask, alpha, lams, resolved.values)
                                   ? weight
                                   : std::get<0>(path_weights_kernel(weight, mask, alpha, lams, resolved, counts));
  c10::SmallVector<at::Tensor, 4> parts;
  int64_t start = 0;
  for (int64_t p = 0; p < paths; ++p) {
    if (sizes[p]) {
      parts.push_back(layer_forward(rows(grouped, start, sizes[p]), entry(effective, p), bias_of(bias, p), conv));
    }
    start += sizes[p];
  }
  if (parts.empty()) return {layer_forward(x, entry(effective, 0), bias_of(bias, 0), conv), perm, counts};
  return {scatter_back(parts, perm, sizes, routed), perm, counts};
}

Outputs routed_backward(const char* op, const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                        const OptionalTensor& mask, const OptionalTensor& alpha, const at::Tensor& perm,
                        const at::Tensor& counts, at::ArrayRef<double> lams, at::IntArrayRef seeds,
                        at::IntArrayRef segments, int64_t bias_entries, const ConvArgs& conv, Needs needs,
                        const OptionalTensor& seed_tensor) {
  const int64_t paths = static_cast<int64_t>(lams.size());
  const int64_t batch = x.size(0);
  const bool routed = segments.empty();
  check_same_dtype(op, "grad_y", grad_y, "weight", weight);
  check_same_dtype(op, "x", x, "weight", weight);
  TORCH_CHECK_VALUE(grad_y.dim() >= 1 && grad_y.size(0) == batch, op, ": grad_y must hold the batch of x (", batch,
                    "), got shape ", grad_y.sizes());
  check_dtype(op, "counts", counts, at::kLong);
  check_shape(op, "counts", counts, {paths});
  check_dtype(op, "perm", perm, at::kLong);
  check_shape(op, "perm", perm, {routed ? batch : 0});
  TORCH_CHECK_VALUE(bias_entries == 0 || bias_entries == 1 || bias_entries == paths, op,
                    ": bias_entries must be 0, 1 or ", paths, ", got ", bias_entries);
  Sizes sizes(segments.begin(), segments.end());
  if (routed) {
    // the one host read: the group sizes and perm's bounds (perm indexes grad_y)
    // (on the CPU both are read in place: a cat would cost more than a small layer's kernels)
    const bool on_host = counts.is_cpu() && perm.is_cpu();
    const at::Tensor host = on_host ? at::Tensor() : at::cat({counts, perm}).to(at::kCPU);
    const at::Tensor host_counts = on_host ? counts.contiguous() : host.narrow(0, 0, paths);
    const at::Tensor host_perm = on_host ? perm.contiguous() : host.narrow(0, paths, batch);
    const int64_t* values = host_counts.const_data_ptr<int64_t>();
    const int64_t* perm_values = host_perm.const_data_ptr<int64_t>();
    sizes.assign(values, values + paths);
    int64_t total = 0, smallest = 0;
    for (int64_t size : sizes) {
      total += size;
      smallest = std::min(smallest, size);
    }
    TORCH_CHECK_VALUE(total == batch && smallest >= 0, op, ": counts must be non-negative and sum to the batch ",
                      batch, ", got ", sizes);
    const auto [low, high] = std::minmax_element(perm_values, perm_values + batch);
    TORCH_CHECK_VALUE(batch == 0 || (*low >= 0 && *high < batch), op, ": perm must index the batch [0, ", batch,
                      "), got values in [", batch ? *low : 0, ", ", batch ? *high : 0, "]");
  } else {
    int64_t total = 0;
    for (int64_t size : sizes) total += size;
    TORCH_CHECK_VALUE(static_cast<int64_t>(sizes.size()) == paths && total == batch, op, ": segments must be ",
                      paths, " non-negative sizes summing to the batch ", batch, ", got ", segments);
  }
  const auto [need_x, need_weight, need_bias_asked, need_alpha] = needs;
  const bool need_bias = need_bias_asked && bias_entries > 0;
  const bool need_effective = need_weight || need_alpha;
  const auto resolved = resolved_seeds(op, seeds, seed_tensor, weight);
  const bool plain = is_plain_bank(op, weight, mask, alpha, lams, resolved.values);
  at::Tensor effective = weight, sigma;
  if (!plain) std::tie(effective, sigma) = path_weights_kernel(weight, mask, alpha, lams, resolved, counts);
  const bool regroup = routed && used_groups(sizes) > 1;
  const at::Tensor grouped_grad = regroup ? gather_rows(grad_y, perm) : grad_y;
  const at::Tensor grouped_x = regroup && need_effective ? gather_rows(x, perm) : x;
  const bool one_path = used_groups(sizes) == 1;
  // a plain bank accumulates dW directly (a shared entry sums its paths)
  at::Tensor grad_effective = need_effective && !one_path ? at::zeros_like(effective) : at::Tensor();
  at::Tensor grad_bias = need_bias ? at::zeros({bias_entries, weight.size(1)}, grad_y.options()) : at::Tensor();
  c10::SmallVector<at::Tensor, 4> grad_parts;
  int64_t start = 0;
  for (int64_t p = 0; p < paths; ++p) {
    const int64_t size = sizes[p];
    if (!size) continue;
    auto [gx, gw, gb] = layer_backward(rows(grouped_grad, start, size), rows(grouped_x, start, size),
                                       entry(effective, p), conv, {need_x, need_effective, need_bias});
    start += size;
    if (need_x) grad_parts.push_back(gx);
    if (need_effective) {
      if (one_path) {
        grad_effective = one_path_bank_grad(gw, p, effective);
      } else {
        entry(grad_effective, p).add_(gw);
      }
    }
    if (need_bias) grad_bias[bias_entries == 1 ? 0 : p].add_(gb);
  }
  at::Tensor grad_x;
  if (need_x) grad_x = grad_parts.empty() ? at::zeros_like(x) : scatter_back(grad_parts, perm, sizes, routed);
  at::Tensor grad_weight, grad_alpha;
  if (need_effective && plain) {
    grad_weight = grad_effective;
  } else if (need_effective) {
    std::tie(grad_weight, grad_alpha) = path_weights_backward_kernel(grad_effective, weight.size(0), mask, alpha,
                                                                     sigma, lams, resolved, counts, need_alpha);
  }
  return {grad_x, grad_weight, grad_bias, grad_alpha};
}

Needs needs_of(const char* op, const NeedsList& needs) {
  TORCH_CHECK_VALUE(needs.size() == 4, op, ": needs must hold 4 flags (x, weight, bias, alpha), got ", needs.size());
  return {needs.get(0), needs.get(1), needs.get(2), needs.get(3)};
}

LayerOutputs path_conv2d_impl(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                         const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                         at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         const OptionalTensor& seed_tensor) {
  const ConvArgs conv{stride, padding, dilation, groups};
  return routed_forward("path_conv2d", x, weight, bias, mask, alpha, lams, seeds, route, segments, conv, seed_tensor);
}

Outputs path_conv2d_backward_impl(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                  const OptionalTensor& mask, const OptionalTensor& alpha, const at::Tensor& perm,
                                  const at::Tensor& counts, at::ArrayRef<double> lams, at::IntArrayRef seeds,
                                  at::IntArrayRef segments, int64_t bias_entries, at::IntArrayRef stride,
                                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                                  const NeedsList& needs, const OptionalTensor& seed_tensor) {
  const ConvArgs conv{stride, padding, dilation, groups};
  return routed_backward("path_conv2d_backward", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments,
                         bias_entries, conv, needs_of("path_conv2d_backward", needs), seed_tensor);
}

LayerOutputs path_linear_impl(const at::Tensor& x, const at::Tensor& weight, const OptionalTensor& bias,
                         const OptionalTensor& mask, const OptionalTensor& alpha, at::ArrayRef<double> lams,
                         at::IntArrayRef seeds, const OptionalTensor& route, at::IntArrayRef segments,
                         const OptionalTensor& seed_tensor) {
  return routed_forward("path_linear", x, weight, bias, mask, alpha, lams, seeds, route, segments, ConvArgs{},
                        seed_tensor);
}

Outputs path_linear_backward_impl(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                                  const OptionalTensor& mask, const OptionalTensor& alpha, const at::Tensor& perm,
                                  const at::Tensor& counts, at::ArrayRef<double> lams, at::IntArrayRef seeds,
                                  at::IntArrayRef segments, int64_t bias_entries, const NeedsList& needs,
                                  const OptionalTensor& seed_tensor) {
  return routed_backward("path_linear_backward", grad_y, x, weight, mask, alpha, perm, counts, lams, seeds, segments,
                         bias_entries, ConvArgs{}, needs_of("path_linear_backward", needs), seed_tensor);
}

}  // namespace

TORCH_LIBRARY_IMPL(robustkernels, CPU, m) {
  m.impl("path_conv2d", &path_conv2d_impl);
  m.impl("path_conv2d_backward", &path_conv2d_backward_impl);
  m.impl("path_linear", &path_linear_impl);
  m.impl("path_linear_backward", &path_linear_backward_impl);
}

TORCH_LIBRARY_IMPL(robustkernels, CUDA, m) {
  m.impl("path_conv2d", &path_conv2d_impl);
  m.impl("path_conv2d_backward", &path_conv2d_backward_impl);
  m.impl("path_linear", &path_linear_impl);
  m.impl("path_linear_backward", &path_linear_backward_impl);
}

}  // namespace robustkernels
