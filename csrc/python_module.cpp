// The Python module robustkernels._C. Importing it loads this library and with it the ops'
// registrations (csrc/registration.cpp and the TORCH_LIBRARY_IMPL blocks); its functions are
// direct Python entry points of the layer ops (noisy_conv2d, noisy_linear, path_conv2d,
// path_linear).
//
// Why: torch.ops boxes every argument into IValues and calls the op boxed; on a 1x1x4x4 layer
// that cost more than the kernels (issue 13). These entry points parse their arguments as
// torch's own bindings do (PythonArgParser), release the GIL and call the op through the
// dispatcher, so autograd, the device kernels, functorch and fake tensors see exactly what
// torch.ops would give them. An argument with a __torch_function__ override, or an active
// torch function mode, returns NotImplemented: robustkernels/ops/direct_calls.py then goes
// through torch.ops, which honours them (as does torch.compile's tracing).
// torch's Python headers format messages with fmt, whose compiled part libtorch keeps private.
#define FMT_HEADER_ONLY
#include <Python.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/csrc/utils/python_arg_parser.h>

#include "kernel_choice.h"
#include "ops/path_conv_ops.h"

namespace robustkernels {
namespace {

using NoisyConv2dOp = at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&, const at::Tensor&,
                                 double, int64_t, const OptionalTensor&, at::IntArrayRef, at::IntArrayRef,
                                 at::IntArrayRef, int64_t, const OptionalTensor&);
using NoisyLinearOp = at::Tensor(const at::Tensor&, const at::Tensor&, const OptionalTensor&, const at::Tensor&, double,
                                 int64_t, const OptionalTensor&, const OptionalTensor&);

PyObject* noisy_conv2d(PyObject* /*module*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static torch::PythonArgParser parser({
      "noisy_conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor alpha, double lam, int64_t seed, Tensor? mask, "
      "IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups, Tensor? seed_tensor)",
  });
  static const auto op = op_handle<NoisyConv2dOp>("robustkernels::noisy_conv2d");
  torch::ParsedArgs<12> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  if (r.has_torch_function()) Py_RETURN_NOTIMPLEMENTED;
  // every argument is read from its Python object before the GIL is released
  const at::Tensor x = r.tensor(0), weight = r.tensor(1), alpha = r.tensor(3);
  const OptionalTensor bias = r.optionalTensor(2), mask = r.optionalTensor(6), seed_tensor = r.optionalTensor(11);
  const double lam = r.toDouble(4);
  const int64_t seed = r.toInt64(5), groups = r.toInt64(10);
  const auto stride = r.intlist(7), padding = r.intlist(8), dilation = r.intlist(9);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = op.call(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyObject* noisy_linear(PyObject* /*module*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static torch::PythonArgParser parser({
      "noisy_linear(Tensor x, Tensor weight, Tensor? bias, Tensor alpha, double lam, int64_t seed, Tensor? mask, "
      "Tensor? seed_tensor)",
  });
  static const auto op = op_handle<NoisyLinearOp>("robustkernels::noisy_linear");
  torch::ParsedArgs<8> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  if (r.has_torch_function()) Py_RETURN_NOTIMPLEMENTED;
  const at::Tensor x = r.tensor(0), weight = r.tensor(1), alpha = r.tensor(3);
  const OptionalTensor bias = r.optionalTensor(2), mask = r.optionalTensor(6), seed_tensor = r.optionalTensor(7);
  const double lam = r.toDouble(4);
  const int64_t seed = r.toInt64(5);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = op.call(x, weight, bias, alpha, lam, seed, mask, seed_tensor);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

// The routed layers return only y: the op's other outputs are for its autograd.
PyObject* path_conv2d(PyObject* /*module*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static torch::PythonArgParser parser({
      "path_conv2d(Tensor x, Tensor weight, Tensor? bias, Tensor? mask, Tensor? alpha, ArrayRef<double> lams, "
      "IntArrayRef seeds, Tensor? route, IntArrayRef segments, IntArrayRef stride, IntArrayRef padding, "
      "IntArrayRef dilation, int64_t groups, Tensor? seed_tensor)",
  });
  static const auto op = op_handle<PathConv2dOp>("robustkernels::path_conv2d");
  torch::ParsedArgs<14> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  if (r.has_torch_function()) Py_RETURN_NOTIMPLEMENTED;
  const at::Tensor x = r.tensor(0), weight = r.tensor(1);
  const OptionalTensor bias = r.optionalTensor(2), mask = r.optionalTensor(3), alpha = r.optionalTensor(4);
  const OptionalTensor route = r.optionalTensor(7), seed_tensor = r.optionalTensor(13);
  const auto lams = r.doublelist(5);
  const auto seeds = r.intlist(6), segments = r.intlist(8);
  const auto stride = r.intlist(9), padding = r.intlist(10), dilation = r.intlist(11);
  const int64_t groups = r.toInt64(12);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = std::get<0>(op.call(x, weight, bias, mask, alpha, lams, seeds, route, segments, stride, padding, dilation,
                            groups, seed_tensor));
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyObject* path_linear(PyObject* /*module*/, PyObject* args, PyObject* kwargs) {
  HANDLE_TH_ERRORS
  static torch::PythonArgParser parser({
      "path_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? mask, Tensor? alpha, ArrayRef<double> lams, "
      "IntArrayRef seeds, Tensor? route, IntArrayRef segments, Tensor? seed_tensor)",
  });
  static const auto op = op_handle<PathLinearOp>("robustkernels::path_linear");
  torch::ParsedArgs<10> parsed;
  auto r = parser.parse(args, kwargs, parsed);
  if (r.has_torch_function()) Py_RETURN_NOTIMPLEMENTED;
  const at::Tensor x = r.tensor(0), weight = r.tensor(1);
  const OptionalTensor bias = r.optionalTensor(2), mask = r.optionalTensor(3), alpha = r.optionalTensor(4);
  const OptionalTensor route = r.optionalTensor(7), seed_tensor = r.optionalTensor(9);
  const auto lams = r.doublelist(5);
  const auto seeds = r.intlist(6), segments = r.intlist(8);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = std::get<0>(op.call(x, weight, bias, mask, alpha, lams, seeds, route, segments, seed_tensor));
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

#define DIRECT_CALL(name) {#name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(name)), \
                           METH_VARARGS | METH_KEYWORDS, nullptr}

PyMethodDef direct_calls[] = {
    DIRECT_CALL(noisy_conv2d),
    DIRECT_CALL(noisy_linear),
    DIRECT_CALL(path_conv2d),
    DIRECT_CALL(path_linear),
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace
}  // namespace robustkernels

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, robustkernels::direct_calls};
  return PyModule_Create(&module_def);
}
