// The instruction-set path the CPU kernels run on: scalar (the baseline x86-64
// build and the scalar Philox code), AVX2 (with FMA) or AVX-512 (F and DQ). One
// choice for the whole process and every kernel: ROBUSTKERNELS_CPU_SIMD sets it at
// the first kernel call (unset or "best": the best path this CPU has), and
// torch.ops.robustkernels.set_cpu_isa changes it at run time, so that every path
// can be tested on one machine. A path the CPU lacks is refused with an error.
#pragma once

namespace robustkernels {

enum class CpuIsa { kScalar, kAvx2, kAvx512 };

// The selected path (reads ROBUSTKERNELS_CPU_SIMD on first use; throws if that
// names a path the CPU lacks or no path at all).
CpuIsa cpu_isa();

}  // namespace robustkernels
