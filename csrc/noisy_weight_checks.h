// Argument checks shared by the CPU kernel and the CUDA launcher of the noisy
// weight op family. Errors name the argument and surface in Python as
// ValueError (bad values or shapes) or TypeError (bad dtypes).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace robustkernels {

// How alpha broadcasts over the weight (PNI's three granularities).
enum class AlphaMode : int64_t { kLayer = 0, kChannel = 1, kElement = 2 };

inline AlphaMode check_noisy_weight_args(const char* op, const at::Tensor& weight,
                                         const at::Tensor& alpha,
                                         const std::optional<at::Tensor>& mask) {
  TORCH_CHECK_TYPE(at::isFloatingType(weight.scalar_type()), op,
                   ": weight must be a floating-point tensor, got ", weight.scalar_type());
  TORCH_CHECK_VALUE(weight.dim() >= 1, op, ": weight must have at least one dimension");
  TORCH_CHECK_VALUE(weight.numel() > 0, op, ": weight must not be empty");
  TORCH_CHECK_TYPE(alpha.scalar_type() == weight.scalar_type(), op,
                   ": alpha must have the weight's dtype ", weight.scalar_type(), ", got ",
                   alpha.scalar_type());
  TORCH_CHECK_VALUE(alpha.device() == weight.device(), op,
                    ": alpha must be on the weight's device ", weight.device(), ", got ",
                    alpha.device());
  if (mask.has_value()) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, op, ": mask must be a bool tensor, got ",
                     mask->scalar_type());
    TORCH_CHECK_VALUE(mask->sizes() == weight.sizes(), op, ": mask must have the weight's shape ",
                      weight.sizes(), ", got ", mask->sizes());
    TORCH_CHECK_VALUE(mask->device() == weight.device(), op,
                      ": mask must be on the weight's device ", weight.device(), ", got ",
                      mask->device());
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

inline int64_t alpha_index(AlphaMode mode, int64_t element, int64_t inner) {
  switch (mode) {
    case AlphaMode::kLayer:
      return 0;
    case AlphaMode::kChannel:
      return element / inner;
    default:
      return element;
  }
}

}  // namespace robustkernels
