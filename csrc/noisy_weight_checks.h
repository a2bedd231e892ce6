// Argument checks of the noisy weight op family, run first by both its CPU kernels
// (device kCPU) and its CUDA launchers (kCUDA), so the two builds accept and reject
// the same inputs. Errors name the op and the argument (see arg_checks.h).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "arg_checks.h"

namespace robustkernels {

// seed_offset, where given: a 0-dim int64 tensor on the weight's device, added to the seed there
// (a layer's per-call seed held on its GPU: a CUDA graph replays the read, not the value).
inline void check_seed_offset(const char* op, const std::optional<at::Tensor>& seed_offset, const char* like_name,
                              const at::Tensor& like) {
  if (!seed_offset.has_value()) return;
  check_dtype(op, "seed_offset", *seed_offset, at::kLong);
  TORCH_CHECK_VALUE(seed_offset->dim() == 0, op, ": seed_offset must be a 0-dim tensor, got shape ",
                    seed_offset->sizes());
  check_same_device(op, "seed_offset", *seed_offset, like_name, like);
}

// A CPU kernel's seed: seed plus seed_offset's value (read in place: a CPU tensor costs no sync).
inline int64_t seed_with_offset(const char* op, int64_t seed, const std::optional<at::Tensor>& seed_offset) {
  if (!seed_offset.has_value()) return seed;
  const int64_t offset = *seed_offset->const_data_ptr<int64_t>();
  int64_t total = 0;
  TORCH_CHECK_VALUE(offset >= 0 && !__builtin_add_overflow(seed, offset, &total), op,
                    ": seed must be in [0, 2**63), got seed + seed_offset = ", seed, " + ", offset);
  return total;
}

// The CPU path kernels' seeds: every seed plus seed_offset's value.
inline std::vector<int64_t> seeds_with_offset(const char* op, at::IntArrayRef seeds,
                                              const std::optional<at::Tensor>& seed_offset) {
  std::vector<int64_t> shifted;
  shifted.reserve(seeds.size());
  for (int64_t seed : seeds) shifted.push_back(seed_with_offset(op, seed, seed_offset));
  return shifted;
}

// How alpha broadcasts over the weight (PNI's three granularities).
enum class AlphaMode : int64_t { kLayer = 0, kChannel = 1, kElement = 2 };

// weight (named `weight_name`: the backward passes grad_out) on a `device` device,
// alpha and mask beside it; returns alpha's mode.
inline AlphaMode check_noisy_weight_args(const char* op, const char* weight_name, const at::Tensor& weight,
                                         const at::Tensor& alpha, int64_t seed,
                                         const std::optional<at::Tensor>& mask, at::DeviceType device) {
  check_kernel_float(op, weight_name, weight);
  check_device_type(op, weight_name, weight, device);
  TORCH_CHECK_VALUE(weight.dim() >= 1, op, ": ", weight_name, " must have at least one dimension");
  check_not_empty(op, weight_name, weight);
  check_same_dtype(op, "alpha", alpha, weight_name, weight);
  check_same_device(op, "alpha", alpha, weight_name, weight);
  check_seed(op, "seed", seed);
  if (mask.has_value()) {
    check_dtype(op, "mask", *mask, at::kBool);
    check_shape(op, "mask", *mask, weight.sizes());
    check_same_device(op, "mask", *mask, weight_name, weight);
  }
  if (alpha.numel() == 1) {
    return AlphaMode::kLayer;
  }
  if (alpha.sizes() == weight.sizes()) {
    return AlphaMode::kElement;
  }
  const int64_t out_channels = weight.size(0);
  bool channel_shaped = alpha.numel() == out_channels && alpha.dim() >= 1 &&
                        alpha.size(0) == out_channels && alpha.dim() <= weight.dim();
  TORCH_CHECK_VALUE(channel_shaped, op,
                    ": alpha must hold one value (layerwise), one per output channel "
                    "(channelwise, shape [", out_channels, "] or [", out_channels,
                    ", 1, ...]) or one per weight element (elementwise, shape ", weight.sizes(),
                    "), got shape ", alpha.sizes());
  return AlphaMode::kChannel;
}

// The backward's arguments: those of the forward plus sigma, std(W) from the forward
// (one floating value on grad_out's device).
inline AlphaMode check_noisy_weight_backward_args(const char* op, const at::Tensor& grad_out,
                                                  const at::Tensor& alpha, const at::Tensor& sigma, int64_t seed,
                                                  const std::optional<at::Tensor>& mask, at::DeviceType device) {
  const AlphaMode mode = check_noisy_weight_args(op, "grad_out", grad_out, alpha, seed, mask, device);
  check_kernel_float(op, "sigma", sigma);
  check_same_device(op, "sigma", sigma, "grad_out", grad_out);
  TORCH_CHECK_VALUE(sigma.numel() == 1, op, ": sigma must hold one value, got ", sigma.numel());
  return mode;
}

inline void check_philox_normal_args(const char* op, const at::Tensor& like, int64_t seed, int64_t offset,
                                     at::DeviceType device) {
  check_defined(op, "like", like);
  check_device_type(op, "like", like, device);
  check_seed(op, "seed", seed);
  TORCH_CHECK_VALUE(offset >= 0, op, ": offset must be non-negative, got ", offset);
  // Philox counters are 64-bit: offset + numel must not wrap around.
  TORCH_CHECK_VALUE(offset <= INT64_MAX - like.numel(), op, ": offset + like.numel() overflows int64, got offset ",
                    offset, " for ", like.numel(), " elements");
}

}  // namespace robustkernels
