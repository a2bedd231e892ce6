"""Philox normals as a standalone kernel: the cross-backend check of the generator."""

import triton
import triton.language as tl


@triton.jit
def philox_normal_kernel(out_ptr, seed, offset, n, BLOCK: tl.constexpr):
    index = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + index, tl.randn(seed, offset + index), mask=index < n)
