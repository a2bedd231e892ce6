// Argument checks shared by every op's CPU kernel and CUDA launcher, so that the
// two builds reject the same inputs with the same messages. Each message names the
// op and the argument; a bad dtype surfaces in Python as TypeError, anything else
// (definedness, device, shape, layout, values) as ValueError. Run them all before a
// kernel touches memory.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string_view>

namespace robustkernels {

// The floating dtypes the kernels dispatch over (AT_DISPATCH_FLOATING_TYPES_AND2(kHalf, kBFloat16)).
inline bool is_kernel_float(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
}

// Python's name of a dtype ("int32", "float16"), as the Python layer's messages print it.
inline std::string_view dtype_name(at::ScalarType dtype) { return c10::getDtypeNames(dtype).first; }

inline void check_defined(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " must be a tensor, got an undefined one");
}

inline void check_kernel_float(const char* op, const char* name, const at::Tensor& t) {
  check_defined(op, name, t);
  TORCH_CHECK_TYPE(is_kernel_float(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
                   dtype_name(t.scalar_type()));
}

inline void check_dtype(const char* op, const char* name, const at::Tensor& t, at::ScalarType dtype) {
  check_defined(op, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, op, ": ", name, " must be a ", dtype_name(dtype), " tensor, got ",
                   dtype_name(t.scalar_type()));
}

// `t` has the dtype of `like` (named `like_name` in the message).
inline void check_same_dtype(const char* op, const char* name, const at::Tensor& t, const char* like_name,
                             const at::Tensor& like) {
  check_defined(op, name, t);
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have ", like_name, "'s dtype ",
                   dtype_name(like.scalar_type()), ", got ", dtype_name(t.scalar_type()));
}

inline void check_device_type(const char* op, const char* name, const at::Tensor& t, at::DeviceType type) {
  TORCH_CHECK_VALUE(t.device().type() == type, op, ": ", name, " must be a ", at::DeviceTypeName(type),
                    " tensor, got one on ", t.device());
}

inline void check_same_device(const char* op, const char* name, const at::Tensor& t, const char* like_name,
                              const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.device() == like.device(), op, ": ", name, " must be on ", like_name, "'s device ",
                    like.device(), ", got ", t.device());
}

inline void check_shape(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef shape) {
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

// `layout` spells the expected dimensions, e.g. "[N, B, C]".
inline void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == rank, op, ": ", name, " must be ", rank, "-D ", layout, ", got shape ", t.sizes());
}

inline void check_not_empty(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.numel() > 0, op, ": ", name, " must not be empty, got shape ", t.sizes());
}

inline void check_contiguous(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name, " must be contiguous, got strides ", t.strides(),
                    " for shape ", t.sizes());
}

// Seeds key Philox streams; negative ones are refused so that every backend and
// the Python layer agree on the valid range [0, 2**63).
inline void check_seed(const char* op, const char* name, int64_t seed) {
  TORCH_CHECK_VALUE(seed >= 0, op, ": ", name, " must be non-negative, got ", seed);
}

// Every value of the integer tensor `t` lies in [0, bound): it indexes memory. Reads
// `t` (one reduction on its device), so check its dtype and device first.
inline void check_index_range(const char* op, const char* name, const at::Tensor& t, int64_t bound) {
  if (t.numel() == 0) return;
  const auto [low, high] = at::aminmax(t);
  const int64_t min_value = low.item<int64_t>(), max_value = high.item<int64_t>();
  TORCH_CHECK_VALUE(min_value >= 0 && max_value < bound, op, ": ", name, " holds an index out of range [0, ", bound,
                    "): its values span [", min_value, ", ", max_value, "]");
}

}  // namespace robustkernels
