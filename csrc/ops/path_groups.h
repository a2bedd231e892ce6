// How a routed layer call groups its batch by path (csrc/ops/path_conv.cpp): the group sizes,
// the gather by perm and the scatter back, a group's rows and a bank's entry, and segment counts
// made on the device without a host copy.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <vector>

#include "../cpu/cpu_empty.h"
#include "path_conv_ops.h"

namespace robustkernels {

// Per-path group sizes from the counts, checked (the one host read of a routed call).
inline Sizes group_sizes(const char* op, const at::Tensor& counts, int64_t batch, int64_t paths) {
  const at::Tensor host = counts.is_cpu() ? counts : counts.to(at::kCPU);
  const int64_t* values = host.const_data_ptr<int64_t>();
  Sizes sizes(values, values + host.numel());
  int64_t total = 0;
  for (int64_t size : sizes) total += size;
  TORCH_CHECK_VALUE(total == batch, op, ": route values must lie in [0, ", paths, ")");
  return sizes;
}

// `values` as an int64 tensor on `device`. On the CPU without the dispatcher (at::tensor's
// dispatch costs a small layer more than its kernels); on a GPU by fills, never a copy from
// pageable host memory (a blocking copy syncs the stream, and a CUDA graph cannot capture it).
inline at::Tensor int64_tensor(at::IntArrayRef values, const at::Device& device) {
  const int64_t size = static_cast<int64_t>(values.size());
  if (device.is_cpu()) {
    at::Tensor host = cpu_empty({size}, at::kLong);
    std::copy(values.begin(), values.end(), host.mutable_data_ptr<int64_t>());
    return host;
  }
  const auto options = at::TensorOptions().dtype(at::kLong).device(device);
  if (size == 0 || std::all_of(values.begin(), values.end(), [&](int64_t v) { return v == values[0]; })) {
    return at::full({size}, size ? values[0] : 0, options);  // one launch: equal segments, the common case
  }
  at::Tensor out = at::empty({size}, options);
  for (int64_t i = 0; i < size; ++i) out.narrow(0, i, 1).fill_(values[i]);
  return out;
}

// x[perm]: advanced indexing gathers in parallel (index_select ran ~4x slower on a [128, 64, 32, 32] CPU batch).
inline at::Tensor gather_rows(const at::Tensor& x, const at::Tensor& perm) {
  return at::index(x, c10::List<std::optional<at::Tensor>>({perm}));
}

inline at::Tensor scatter_back(at::TensorList parts, const at::Tensor& perm, at::IntArrayRef sizes,
                        bool routed) {
  // one group holds the whole batch: a stable sort leaves it in batch order
  if (parts.size() == 1) return parts[0];
  if (!routed) return at::cat(parts);
  std::vector<int64_t> shape = parts[0].sizes().vec();
  shape[0] = perm.size(0);
  // in the parts' layout: a channels-last batch (the library's models run so on a CPU) stays so
  at::Tensor out = at::empty(shape, parts[0].options().memory_format(parts[0].suggest_memory_format()));
  int64_t start = 0;
  size_t part = 0;
  for (int64_t size : sizes) {
    if (size) out.index_copy_(0, perm.narrow(0, start, size), parts[part++]);
    start += size;
  }
  return out;
}

// Rows [start, start + size) of t; t itself when they are all of it (a narrow costs more than a
// small layer's kernel).
inline at::Tensor rows(const at::Tensor& t, int64_t start, int64_t size) {
  return start == 0 && size == t.size(0) ? t : t.narrow(0, start, size);
}

// Path p's entry of a bank of 1 (shared) or P entries. Below autograd (inside the ops' kernels,
// where no graph records it) a plain alias of the bank's storage: a select through the dispatcher
// costs a small layer more than its kernels.
inline at::Tensor entry(const at::Tensor& bank, int64_t path) {
  const int64_t index = bank.size(0) == 1 ? 0 : path;
  if (!c10::impl::tls_is_dispatch_key_excluded(c10::DispatchKey::ADInplaceOrView)) {
    return bank[index];
  }
  auto alias = c10::make_intrusive<c10::TensorImpl>(c10::TensorImpl::VIEW, c10::Storage(bank.storage()),
                                                    bank.key_set(), bank.dtype());
  alias->set_sizes_and_strides(bank.sizes().slice(1), bank.strides().slice(1),
                               bank.storage_offset() + index * bank.stride(0));
  return at::Tensor(std::move(alias));
}

inline int64_t used_groups(at::IntArrayRef sizes) {
  return std::count_if(sizes.begin(), sizes.end(), [](int64_t size) { return size > 0; });
}

}  // namespace robustkernels
