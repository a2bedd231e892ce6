// Which implementation the C++ composite ops call for their device kernels.
//
// By default the dispatcher picks the device kernel (robustkernels::*_kernel: C++ on CPU; on
// CUDA the CUDA C++ kernels, or the Triton kernels registered from Python when those are not
// built). robustkernels.use_backend(...) and ROBUSTKERNELS_BACKEND, a test and debugging
// override, switch every composite op to the *_python kernel ops, which run the backend chosen
// in Python (Triton under its interpreter, the reference, or a device kernel checked for the
// device). One process-wide flag: the backward of a GPU tensor runs on autograd's own thread.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace robustkernels {

bool python_kernels_chosen();

// The device kernel op `name`, or its *_python twin while the override is on.
template <typename Signature>
const c10::TypedOperatorHandle<Signature>& chosen_kernel(const c10::TypedOperatorHandle<Signature>& device,
                                                       const c10::TypedOperatorHandle<Signature>& python) {
  return python_kernels_chosen() ? python : device;
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace robustkernels
