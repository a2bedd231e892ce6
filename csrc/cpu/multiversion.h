// Function multiversioning for hot CPU loops: the extension's baseline is plain
// x86-64 (SSE2), so a loop marked RK_MULTIVERSION is compiled for AVX-512, AVX2 and
// the baseline, the best picked at load time (GCC target_clones). Helpers it calls
// are marked RK_ALWAYS_INLINE so they are compiled into each clone.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RK_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#define RK_ALWAYS_INLINE __attribute__((always_inline))
#else
#define RK_MULTIVERSION
#define RK_ALWAYS_INLINE
#endif
