"""Triton kernels of the routed multi-path layers.

path_weights_fwd_kernel builds every path's W'_p = M_p * (W_s(p) + lam_p * alpha_p * std * eta(seed_p))
in one launch (grid: path x block), std(W_s) combined from the foundation's std partials;
path_weights_bwd_kernel writes dW_s = sum over the paths on entry s of M_p * dW'_p and
per-(path, row, block) partials of dalpha, regenerating the noise; route_sort_kernel is a
stable counting sort of the samples by path in one program. Paths with count 0 read and
generate nothing (without counts the launcher passes ones). Whether the weight is shared
(entries = 1) is a runtime argument, not a constexpr: one compiled kernel serves both layouts.
Element indices within one weight are int32 (a weight holds fewer than 2**31 elements):
64-bit division would call a subroutine per element.
"""

import triton
import triton.language as tl

from robustkernels.triton.noisy_weight import std_from_partials
from robustkernels.triton.philox import philox_normal, philox_normal_block


@triton.jit
def _alpha_index(local, n, inner, alpha_size):
    # alpha row of a path: 1 value (layer), one per output channel, or one per element
    return tl.where(alpha_size == 1, 0, tl.where(alpha_size == n, local, local // inner))


@triton.jit(do_not_specialize=["entries"])
def path_weights_fwd_kernel(
    w_ptr,
    mask_ptr,
    alpha_ptr,
    lam_ptr,
    seed_ptr,
    count_ptr,
    sigma_ptr,
    sum_ptr,
    m2_ptr,
    out_ptr,
    n,
    inner,
    alpha_size,
    num_partials,
    PARTIAL_BLOCK,
    entries,
    HAS_MASK: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
    NUM_PARTIALS: tl.constexpr,
    ACC: tl.constexpr,
):
    path = tl.program_id(0)
    block = tl.program_id(1)
    entry = (path % entries).to(tl.int64)  # 0 for a shared weight, else the path's own
    path = path.to(tl.int64)
    local = block * BLOCK + tl.arange(0, BLOCK)
    # (the count loaded per element: the interpreter cannot mask with a scalar and a block)
    valid = (local < n) & (tl.load(count_ptr + path + local * 0) > 0)
    first_block = (block == 0) & (tl.load(count_ptr + path) > 0)  # the program that stores std(W_s)
    value = tl.load(w_ptr + entry * n + local, mask=valid, other=0.0).to(ACC)
    if HAS_NOISE:
        lam = tl.load(lam_ptr + path).to(ACC)
        if lam != 0:
            sigma = std_from_partials(
                sum_ptr + entry * num_partials,
                m2_ptr + entry * num_partials,
                n,
                num_partials,
                PARTIAL_BLOCK,
                NUM_PARTIALS,
                ACC,
            )
            tl.store(sigma_ptr + entry, sigma, mask=first_block)
            alpha = tl.load(
                alpha_ptr + path * alpha_size + _alpha_index(local, n, inner, alpha_size),
                mask=valid,
                other=0.0,
            ).to(ACC)
            eta = philox_normal_block(tl.load(seed_ptr + path), block.to(tl.int64) * BLOCK, BLOCK).to(ACC)
            value = value + (lam * sigma) * alpha * eta
    if HAS_MASK:
        keep = tl.load(mask_ptr + path * n + local, mask=valid, other=0) != 0
        value = tl.where(keep, value, 0.0)
    tl.store(out_ptr + path * n + local, value.to(out_ptr.dtype.element_ty), mask=local < n)


@triton.jit(do_not_specialize=["entries"])
def path_weights_bwd_kernel(
    grad_ptr,
    mask_ptr,
    lam_ptr,
    seed_ptr,
    count_ptr,
    sigma_ptr,
    grad_w_ptr,
    grad_alpha_ptr,
    num_paths,
    rows,
    inner,
    blocks_per_row,
    entries,
    HAS_MASK: tl.constexpr,
    ALPHA_GRAD: tl.constexpr,
    ELEMENTWISE: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    # grid: (row of dW [entries * rows], block of the row's inner elements)
    out_row = tl.program_id(0)
    block = tl.program_id(1)
    row = out_row % rows
    entry = (out_row // rows).to(tl.int64)  # 64-bit offsets below: path * n may pass 2**31
    n = rows * inner
    column = block * BLOCK + tl.arange(0, BLOCK)
    local = row * inner + column
    acc = tl.zeros((BLOCK,), dtype=ACC)
    # a shared weight (entries = 1) sums every path, a bank entry only its own path
    last = tl.where(entries == 1, num_paths, entry + 1)
    for path in range(entry, last):
        valid = (column < inner) & (tl.load(count_ptr + path + column * 0) > 0)
        offsets = path * n + local
        grad = tl.load(grad_ptr + offsets, mask=valid, other=0.0).to(ACC)
        if HAS_MASK:
            keep = tl.load(mask_ptr + offsets, mask=valid, other=0) != 0
            grad = tl.where(keep, grad, 0.0)
        acc += grad
        if ALPHA_GRAD:
            scale = tl.load(lam_ptr + path).to(ACC) * tl.load(sigma_ptr + entry).to(ACC)
            contribution = tl.zeros((BLOCK,), dtype=ACC)
            if scale != 0:
                contribution = grad * philox_normal(tl.load(seed_ptr + path), local).to(ACC) * scale
            if ELEMENTWISE:
                tl.store(
                    grad_alpha_ptr + offsets,
                    contribution.to(grad_alpha_ptr.dtype.element_ty),
                    mask=column < inner,
                )
            else:
                # one partial per (path, row, block); the launcher sums them in a fixed order
                tl.store(
                    grad_alpha_ptr + (path * rows + row) * blocks_per_row + block,
                    tl.sum(contribution, axis=0),
                )
    out = grad_w_ptr + out_row.to(tl.int64) * inner + column
    tl.store(out, acc.to(grad_w_ptr.dtype.element_ty), mask=column < inner)


@triton.jit
def route_sort_kernel(
    route_ptr, count_ptr, perm_ptr, batch, num_paths, BLOCK: tl.constexpr, PATHS: tl.constexpr
):
    # one program: per-path counts, then each sample's slot = its path's offset + its rank
    # among the earlier samples of that path (stable). Out-of-range entries are counted
    # nowhere, so the counts sum to less than the batch and the launcher reports them.
    paths = tl.arange(0, PATHS)
    in_range = paths < num_paths
    counts = tl.zeros((PATHS,), dtype=tl.int64)
    for start in range(0, batch, BLOCK):
        index = start + tl.arange(0, BLOCK)
        route = tl.load(route_ptr + index, mask=index < batch, other=-1).to(tl.int64)
        onehot = (route[:, None] == paths[None, :]) & in_range[None, :]
        counts += tl.sum(onehot.to(tl.int64), axis=0)
    tl.store(count_ptr + paths, counts, mask=in_range)
    base = tl.cumsum(counts, axis=0) - counts
    for start in range(0, batch, BLOCK):
        index = start + tl.arange(0, BLOCK)
        route = tl.load(route_ptr + index, mask=index < batch, other=-1).to(tl.int64)
        onehot = ((route[:, None] == paths[None, :]) & in_range[None, :]).to(tl.int64)
        rank = tl.cumsum(onehot, axis=0) - 1 + base[None, :]
        slot = tl.sum(tl.where(onehot != 0, rank, 0), axis=1)
        placed = tl.sum(onehot, axis=1) > 0
        tl.store(perm_ptr + slot, index.to(tl.int64), mask=placed)
        base += tl.sum(onehot, axis=0)
