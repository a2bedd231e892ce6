// Hot CPU loops compiled once per instruction-set path, the one to run picked per
// call from the process-wide choice of cpu_isa.h (so a test can force each path).
// The extension's baseline is plain x86-64 (SSE2), the scalar path; the AVX2 and
// AVX-512 variants are the same source compiled with __attribute__((target)).
// Helpers the loop calls are marked RK_ALWAYS_INLINE so they are compiled into
// each variant. setup.py builds with -ffp-contract=off: no variant may fuse a
// multiply and an add the others round twice, so the paths agree bit for bit.
#pragma once

#include "cpu_isa.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define RK_ALWAYS_INLINE __attribute__((always_inline))
#define RK_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define RK_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
#else
#define RK_ALWAYS_INLINE
#define RK_TARGET_AVX2
#define RK_TARGET_AVX512
#endif

// RK_PER_ISA(ret, name, (params), (args), body) defines name_scalar, name_avx2 and
// name_avx512, each returning body(args) compiled for its path, and name(params),
// which calls the variant of the selected path. RK_PER_ISA_EACH takes one body per
// path, for a loop that needs a different shape on each (e.g. its vector width).
#define RK_PER_ISA(ret, name, params, args, body) RK_PER_ISA_EACH(ret, name, params, args, body, body, body)

#define RK_PER_ISA_EACH(ret, name, params, args, scalar_body, avx2_body, avx512_body) \
  ret name##_scalar params { return scalar_body args; }                            \
  RK_TARGET_AVX2 ret name##_avx2 params { return avx2_body args; }                 \
  RK_TARGET_AVX512 ret name##_avx512 params { return avx512_body args; }           \
  ret name params {                                                                \
    switch (::robustkernels::cpu_isa()) {                                          \
      case ::robustkernels::CpuIsa::kAvx512:                                       \
        return name##_avx512 args;                                                 \
      case ::robustkernels::CpuIsa::kAvx2:                                         \
        return name##_avx2 args;                                                   \
      default:                                                                     \
        return name##_scalar args;                                                 \
    }                                                                              \
  }
