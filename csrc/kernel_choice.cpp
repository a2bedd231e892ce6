// The process-wide switch of kernel_choice.h, set from Python by robustkernels.use_backend.
#include "kernel_choice.h"

#include <torch/library.h>

#include <atomic>

namespace robustkernels {
namespace {

std::atomic<bool> python_kernels{false};

void set_python_kernels(bool on) { python_kernels.store(on, std::memory_order_relaxed); }

}  // namespace

bool python_kernels_chosen() { return python_kernels.load(std::memory_order_relaxed); }

TORCH_LIBRARY_IMPL(robustkernels, CompositeImplicitAutograd, m) { m.impl("set_python_kernels", &set_python_kernels); }

}  // namespace robustkernels
