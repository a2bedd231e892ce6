"""The library's noise streams in Triton: element i is normal i % 4 of tl.randn4x(seed, i // 4)
(or uniform i % 4 of tl.rand4x(seed, i // 4))."""

import triton
import triton.language as tl


@triton.jit
def philox_normal(seed, index):
    """Normals for a block of int32 element indices (one Philox call per index, all four outputs)."""
    n0, n1, n2, n3 = tl.randn4x(seed, index // 4)
    lane = index % 4
    return tl.where(lane == 0, n0, tl.where(lane == 1, n1, tl.where(lane == 2, n2, n3)))


@triton.jit
def philox_uniform(seed, index):
    """U[0, 1) for a block of element indices: uniform i % 4 of tl.rand4x(seed, i // 4)."""
    u0, u1, u2, u3 = tl.rand4x(seed, index // 4)
    lane = index % 4
    return tl.where(lane == 0, u0, tl.where(lane == 1, u1, tl.where(lane == 2, u2, u3)))


@triton.jit
def philox_normal_block(seed, first, BLOCK: tl.constexpr):
    """Normals of elements first .. first + BLOCK - 1, first a multiple of 4: one
    Philox call per four elements (philox_normal pays one per element)."""
    n0, n1, n2, n3 = tl.randn4x(seed, first // 4 + tl.arange(0, BLOCK // 4))
    # quads[j, y, x] = normal 2 y + x of counter j, laid out row-major as element 4 j + 2 y + x
    quads = tl.join(tl.join(n0, n2), tl.join(n1, n3))
    return tl.reshape(quads, (BLOCK,))


@triton.jit(do_not_specialize=["seed", "offset"])
def philox_normal_kernel(out_ptr, seed, offset, n, BLOCK: tl.constexpr):
    index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    # 64-bit element offsets: offset + index may pass 2**31
    tl.store(out_ptr + index, philox_normal(seed, offset.to(tl.int64) + index), mask=index < n)
