// What the routed multi-path ops share: their types, seeds and the kernels they call (the device
// kernel, or its *_python twin under use_backend; see csrc/kernel_choice.h).
#pragma once

#include <ATen/ATen.h>

#include <ATen/core/List.h>
#include <c10/util/SmallVector.h>

#include <array>
#include <optional>
#include <tuple>
#include <vector>

namespace robustkernels {

using OptionalTensor = std::optional<at::Tensor>;
// (y, perm, counts) of a layer; (dx, dW, dbias, dalpha) of its backward
using LayerOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Needs = std::array<bool, 4>;  // dx, dW, dbias, dalpha
using NeedsList = c10::List<bool>;  // the backward ops' `needs` argument

// The layer ops' signatures (csrc/ops/path_conv.cpp), for their autograd (path_conv_autograd.cpp).
using PathConv2dOp = LayerOutputs(const at::Tensor&, const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                  const OptionalTensor&, at::ArrayRef<double>, at::IntArrayRef, const OptionalTensor&,
                                  at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t,
                                  const OptionalTensor&);
using PathConv2dBackwardOp = Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                     const OptionalTensor&, const at::Tensor&, const at::Tensor&,
                                     at::ArrayRef<double>, at::IntArrayRef, at::IntArrayRef, int64_t,
                                     at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, int64_t, const NeedsList&,
                                     const OptionalTensor&);
using PathLinearOp = LayerOutputs(const at::Tensor&, const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                  const OptionalTensor&, at::ArrayRef<double>, at::IntArrayRef, const OptionalTensor&,
                                  at::IntArrayRef, const OptionalTensor&);
using PathLinearBackwardOp = Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                                     const OptionalTensor&, const at::Tensor&, const at::Tensor&,
                                     at::ArrayRef<double>, at::IntArrayRef, at::IntArrayRef, int64_t,
                                     const NeedsList&, const OptionalTensor&);

// (Small vectors here and in the layer ops: a heap allocation costs a small layer more than a launch.)
using Sizes = c10::SmallVector<int64_t, 4>;

// The per-path seeds of a call: `values`, each plus `device_offset` where the call's seed tensor
// lives on the weight's GPU (added by the kernels there: a CUDA graph replays the read).
struct PathSeeds {
  Sizes values;
  std::optional<at::Tensor> device_offset;
};

// Every seed plus seed_tensor: one on the CPU is read here (no device sync), one on `weight`'s
// GPU is passed on to the kernels.
PathSeeds resolved_seeds(const char* op, at::IntArrayRef seeds, const std::optional<at::Tensor>& seed_tensor,
                         const at::Tensor& weight);

// (W' [P, ...], std [S]) of every path; paths whose count is 0 get zeros.
std::tuple<at::Tensor, at::Tensor> path_weights_kernel(const at::Tensor& weight, const OptionalTensor& mask,
                                                       const std::optional<at::Tensor>& alpha,
                                                       at::ArrayRef<double> lams, const PathSeeds& seeds,
                                                       const std::optional<at::Tensor>& counts);

// (dW [entries, ...], dalpha [P, A]) from dW' [P, ...]; dalpha is empty without need_alpha_grad.
std::tuple<at::Tensor, at::Tensor> path_weights_backward_kernel(const at::Tensor& grad, int64_t entries,
                                                                const std::optional<at::Tensor>& mask,
                                                                const std::optional<at::Tensor>& alpha,
                                                                const at::Tensor& sigma, at::ArrayRef<double> lams,
                                                                const PathSeeds& seeds,
                                                                const std::optional<at::Tensor>& counts,
                                                                bool need_alpha_grad);

// (counts [P], perm [B]): the samples grouped by path, each group in batch order.
std::tuple<at::Tensor, at::Tensor> route_sort_kernel(const at::Tensor& route, int64_t num_paths);

}  // namespace robustkernels
