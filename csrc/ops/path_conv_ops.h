// What the routed multi-path ops share: their seeds and the kernels they call (the device
// kernel, or its *_python twin under use_backend; see csrc/kernel_choice.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace robustkernels {

// Every seed plus the value of `seed_tensor` (a 0-dim int64 CPU tensor) when one is given.
std::vector<int64_t> resolved_seeds(const char* op, at::IntArrayRef seeds, const std::optional<at::Tensor>& seed_tensor);

// (W' [P, ...], std [S]) of every path; paths whose count is 0 get zeros.
std::tuple<at::Tensor, at::Tensor> path_weights_kernel(const at::Tensor& weight, const std::optional<at::Tensor>& mask,
                                                       const std::optional<at::Tensor>& alpha,
                                                       at::ArrayRef<double> lams, at::IntArrayRef seeds,
                                                       const std::optional<at::Tensor>& counts);

// (dW [entries, ...], dalpha [P, A]) from dW' [P, ...]; dalpha is empty without need_alpha_grad.
std::tuple<at::Tensor, at::Tensor> path_weights_backward_kernel(const at::Tensor& grad, int64_t entries,
                                                                const std::optional<at::Tensor>& mask,
                                                                const std::optional<at::Tensor>& alpha,
                                                                const at::Tensor& sigma, at::ArrayRef<double> lams,
                                                                at::IntArrayRef seeds,
                                                                const std::optional<at::Tensor>& counts,
                                                                bool need_alpha_grad);

// (counts [P], perm [B]): the samples grouped by path, each group in batch order.
std::tuple<at::Tensor, at::Tensor> route_sort_kernel(const at::Tensor& route, int64_t num_paths);

}  // namespace robustkernels
