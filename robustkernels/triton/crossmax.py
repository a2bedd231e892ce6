"""Triton kernels of CrossMax (the multi-resolution self-ensemble's aggregation).

One program per sample b works on the [N, C] slice of logits [N, B, C] in tiles of
[BLOCK_N, BLOCK_C] (BLOCK_N: N padded to a power of two, at least 16; classes in a loop).
Forward: max / argmax over classes per predictor (first loop over class tiles),
then per class tile the max / argmax over predictors and the selection of the
k-th highest value by repeated extraction (from the top, or for deep ranks from
the bottom). Backward rebuilds the gradient tile of each class tile from the
saved indices, twice: first to sum its rows, then to store it with the row sums
subtracted at each row's argmax class. Ties go to the lowest index, as in C++.
"""

import triton
import triton.language as tl


@triton.jit
def crossmax_fwd_kernel(
    x_ptr,
    out_ptr,
    class_ptr,
    pred_ptr,
    sel_ptr,
    N,
    B,
    C,
    stride_n,
    stride_b,
    stride_c,
    steps,
    MEAN: tl.constexpr,
    FROM_TOP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    n_valid = n < N
    rows = x_ptr + b * stride_b + n[:, None] * stride_n
    # max and argmax over classes per predictor
    row_max = tl.full([BLOCK_N], float("-inf"), ACC)
    row_arg = tl.zeros([BLOCK_N], tl.int32)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        valid = n_valid[:, None] & (c < C)[None, :]
        x = tl.load(rows + c[None, :] * stride_c, mask=valid, other=float("-inf")).to(ACC)
        tile_max = tl.max(x, axis=1)
        tile_arg = tl.min(tl.where(valid & (x == tile_max[:, None]), c[None, :], C), axis=1)
        better = tile_max > row_max
        row_arg = tl.where(better, tile_arg, row_arg)
        row_max = tl.where(better, tile_max, row_max)
    tl.store(class_ptr + n * B + b, row_arg, mask=n_valid)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_valid = c < C
        valid = n_valid[:, None] & c_valid[None, :]
        x = tl.load(rows + c[None, :] * stride_c, mask=valid, other=0.0).to(ACC)
        y = tl.where(valid, x - row_max[:, None], float("-inf"))
        col_max = tl.max(y, axis=0)
        col_arg = tl.min(tl.where(valid & (y == col_max[None, :]), n[:, None], BLOCK_N), axis=0)
        tl.store(pred_ptr + b * C + c, col_arg, mask=c_valid)
        z = y - tl.where(c_valid, col_max, 0.0)[None, :]  # padded classes stay -inf, not NaN
        available = valid
        value = tl.zeros([BLOCK_C], ACC)
        total = tl.zeros([BLOCK_C], ACC)
        pick = tl.zeros([BLOCK_C], tl.int32)
        for j in range(0, steps):
            if FROM_TOP:  # next in the order: highest value, then lowest index
                masked = tl.where(available, z, float("-inf"))
                value = tl.max(masked, axis=0)
                pick = tl.min(tl.where(available & (masked == value[None, :]), n[:, None], BLOCK_N), axis=0)
            else:  # the same order walked from its end: lowest value, then highest index
                masked = tl.where(available, z, float("inf"))
                value = tl.min(masked, axis=0)
                pick = tl.max(tl.where(available & (masked == value[None, :]), n[:, None], -1), axis=0)
            available = available & (n[:, None] != pick[None, :])
            if MEAN:
                total += value
                tl.store(sel_ptr + (j * B + b) * C + c, pick, mask=c_valid)
        if MEAN:
            result = total / steps
        else:
            result = value
            tl.store(sel_ptr + b * C + c, pick, mask=c_valid)
        tl.store(out_ptr + b * C + c, result.to(out_ptr.dtype.element_ty), mask=c_valid)


@triton.jit
def _grad_tile(
    grad_ptr,
    pred_ptr,
    sel_ptr,
    b,
    B,
    C,
    S,
    c0,
    n,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):
    """d z-terms of one class tile: +g at (selected n, c), -g per selection at (m, c)."""
    c = c0 + tl.arange(0, BLOCK_C)
    c_valid = c < C
    g = tl.load(grad_ptr + b * C + c, mask=c_valid, other=0.0).to(ACC) / S
    m = tl.load(pred_ptr + b * C + c, mask=c_valid, other=-1)
    count = tl.zeros([BLOCK_N, BLOCK_C], ACC)
    for j in range(0, S):
        s = tl.load(sel_ptr + (j * B + b) * C + c, mask=c_valid, other=-1)
        count += (n[:, None] == s[None, :]).to(ACC)
    return g[None, :] * (count - S * (n[:, None] == m[None, :]).to(ACC))


@triton.jit
def crossmax_bwd_kernel(
    grad_ptr,
    class_ptr,
    pred_ptr,
    sel_ptr,
    out_ptr,
    N,
    B,
    C,
    S,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
    ACC: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    n_valid = n < N
    arg = tl.load(class_ptr + n * B + b, mask=n_valid, other=-1)
    # the x[n, b, a_n] terms: minus the row sums of the tiles, added at a_n
    row_sum = tl.zeros([BLOCK_N], ACC)
    for c0 in range(0, C, BLOCK_C):
        row_sum += tl.sum(
            _grad_tile(grad_ptr, pred_ptr, sel_ptr, b, B, C, S, c0, n, BLOCK_N, BLOCK_C, ACC), axis=1
        )
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        tile = _grad_tile(grad_ptr, pred_ptr, sel_ptr, b, B, C, S, c0, n, BLOCK_N, BLOCK_C, ACC)
        tile = tile - tl.where(c[None, :] == arg[:, None], row_sum[:, None], 0.0)
        valid = n_valid[:, None] & (c < C)[None, :]
        offsets = (n[:, None] * B + b) * C + c[None, :]
        tl.store(out_ptr + offsets, tile.to(out_ptr.dtype.element_ty), mask=valid)
