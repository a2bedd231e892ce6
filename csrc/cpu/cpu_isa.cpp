#include "cpu_isa.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

namespace robustkernels {
namespace {

constexpr std::array<CpuIsa, 3> kAllIsas = {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512};
constexpr int kUnset = -1;

// The selection; kUnset until the first kernel call reads the environment.
std::atomic<int> selected{kUnset};

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

// What the processor (and the OS, which must save the wider registers) supports;
// the same features the kernels of each path are compiled for (multiversion.h).
bool supported(CpuIsa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case CpuIsa::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    case CpuIsa::kAvx2:
      return avx2;
    default:
      return true;
  }
#else
  return isa == CpuIsa::kScalar;
#endif
}

std::vector<std::string> supported_names() {
  std::vector<std::string> names;
  for (CpuIsa isa : kAllIsas)
    if (supported(isa)) names.emplace_back(isa_name(isa));
  return names;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// "best" (or empty) is the best supported path; otherwise the named path, which the CPU must have.
CpuIsa parse(const std::string& name, const char* source) {
  if (name.empty() || name == "best") {
    CpuIsa best = CpuIsa::kScalar;
    for (CpuIsa isa : kAllIsas)
      if (supported(isa)) best = isa;
    return best;
  }
  for (CpuIsa isa : kAllIsas) {
    if (name != isa_name(isa)) continue;
    TORCH_CHECK_VALUE(supported(isa), source, ": this CPU has no ", name, " path (it supports ",
                      joined(supported_names()), ")");
    return isa;
  }
  TORCH_CHECK_VALUE(false, source, " must be 'scalar', 'avx2', 'avx512' or 'best', got '", name, "'");
  return CpuIsa::kScalar;
}

void set_cpu_isa(c10::string_view name) {
  selected = static_cast<int>(parse(std::string(name), "set_cpu_isa: isa"));
}

std::string cpu_isa_op() { return isa_name(cpu_isa()); }

}  // namespace

CpuIsa cpu_isa() {
  const int current = selected.load(std::memory_order_relaxed);
  if (current != kUnset) return static_cast<CpuIsa>(current);
  const char* setting = std::getenv("ROBUSTKERNELS_CPU_SIMD");
  const CpuIsa chosen = parse(setting == nullptr ? "" : setting, "ROBUSTKERNELS_CPU_SIMD");
  int expected = kUnset;
  selected.compare_exchange_strong(expected, static_cast<int>(chosen));
  return static_cast<CpuIsa>(selected.load());
}

TORCH_LIBRARY_IMPL(robustkernels, CompositeImplicitAutograd, m) {
  m.impl("set_cpu_isa", &set_cpu_isa);
  m.impl("cpu_isa", &cpu_isa_op);
  m.impl("supported_cpu_isas", &supported_names);
}

}  // namespace robustkernels
