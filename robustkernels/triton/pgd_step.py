"""Triton kernels of one projected-gradient attack step (robustkernels/reference/pgd_step.py).

L∞ is elementwise: a flat grid of blocks over the [B, M] elements, each element
reading its sample's step. L2 needs two per-sample norms first: one program per
sample loops over its M elements three times (||g||, ||u - x_orig||, the projected
output), accumulating in ACC.
"""

import triton
import triton.language as tl


@triton.jit
def pgd_step_linf_kernel(
    x_ptr,
    g_ptr,
    o_ptr,
    step_ptr,
    out_ptr,
    total,
    M,
    eps,
    lo,
    hi,
    NORMALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = offsets < total
    x = tl.load(x_ptr + offsets, mask=valid, other=0.0).to(ACC)
    g = tl.load(g_ptr + offsets, mask=valid, other=0.0).to(ACC)
    o = tl.load(o_ptr + offsets, mask=valid, other=0.0).to(ACC)
    s = tl.load(step_ptr + offsets // M, mask=valid, other=0.0).to(ACC)
    if NORMALIZE:
        g = (g > 0).to(ACC) - (g < 0).to(ACC)
    u = x + s * g
    v = tl.minimum(tl.maximum(u, o - eps), o + eps)
    v = tl.minimum(tl.maximum(v, lo), hi)
    tl.store(out_ptr + offsets, v.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _displacement(x_ptr, g_ptr, o_ptr, base, start, M, scale, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """(x + scale * g - x_orig, x_orig, offsets) of one block of a sample (zeros past M)."""
    idx = start + tl.arange(0, BLOCK)
    valid = idx < M
    x = tl.load(x_ptr + base + idx, mask=valid, other=0.0).to(ACC)
    g = tl.load(g_ptr + base + idx, mask=valid, other=0.0).to(ACC)
    o = tl.load(o_ptr + base + idx, mask=valid, other=0.0).to(ACC)
    return x + scale * g - o, o, idx


@triton.jit
def pgd_step_l2_kernel(
    x_ptr,
    g_ptr,
    o_ptr,
    step_ptr,
    out_ptr,
    M,
    eps,
    lo,
    hi,
    floor,
    NORMALIZE: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    base = b * M
    scale = tl.load(step_ptr + b).to(ACC)
    if NORMALIZE:
        g_sq = tl.zeros([BLOCK], ACC)
        for start in range(0, M, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            g = tl.load(g_ptr + base + idx, mask=idx < M, other=0.0).to(ACC)
            g_sq += g * g
        scale = scale / tl.maximum(tl.sqrt(tl.sum(g_sq, axis=0)), floor)
    d_sq = tl.zeros([BLOCK], ACC)
    for start in range(0, M, BLOCK):
        d, _, _ = _displacement(x_ptr, g_ptr, o_ptr, base, start, M, scale, BLOCK, ACC)
        d_sq += d * d
    factor = tl.minimum(eps / tl.maximum(tl.sqrt(tl.sum(d_sq, axis=0)), floor), 1.0)
    for start in range(0, M, BLOCK):
        d, o, idx = _displacement(x_ptr, g_ptr, o_ptr, base, start, M, scale, BLOCK, ACC)
        v = tl.minimum(tl.maximum(o + d * factor, lo), hi)
        tl.store(out_ptr + base + idx, v.to(out_ptr.dtype.element_ty), mask=idx < M)
