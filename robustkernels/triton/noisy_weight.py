"""Triton kernels of the noisy / masked weight transform.

Forward: one pass of per-block partial sums for std(W), then one fused pass that
combines the partials into std(W) (Chan's parallel variance) and writes
W' = M * (W + lam * alpha * std * eta(seed, i)). Backward regenerates the
noise and writes dW = M * dW' and per-(channel, block) partials of dalpha.
The seed is `seed` plus the int64 at seed_offset_ptr (0 for a seed known on the host; a layer's
seed held on the device otherwise, which a captured CUDA graph reads at every replay).
"""

import triton
import triton.language as tl

from robustkernels.triton.philox import philox_normal, philox_normal_block

# Globals a kernel reads must be tl.constexpr objects: the compiler rejects annotated
# globals (`X: tl.constexpr = 0`), which only the interpreter accepts.
ALPHA_LAYER = tl.constexpr(0)
ALPHA_CHANNEL = tl.constexpr(1)


@triton.jit
def std_partials_kernel(w_ptr, sum_ptr, m2_ptr, n, chunk, BLOCK: tl.constexpr, ACC: tl.constexpr):
    # one program per chunk of `chunk` elements: its sum, then the sum of squared
    # deviations from the chunk's mean, BLOCK elements at a time
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * chunk
    end = tl.minimum(start + chunk, n)
    total = tl.zeros((BLOCK,), dtype=ACC)
    for offset in range(0, chunk, BLOCK):
        index = start + offset + tl.arange(0, BLOCK)
        total += tl.load(w_ptr + index, mask=index < end, other=0.0).to(ACC)
    chunk_sum = tl.sum(total, axis=0)
    mean = chunk_sum / (end - start).to(ACC)
    squares = tl.zeros((BLOCK,), dtype=ACC)
    for offset in range(0, chunk, BLOCK):
        index = start + offset + tl.arange(0, BLOCK)
        valid = index < end
        deviation = tl.where(valid, tl.load(w_ptr + index, mask=valid, other=0.0).to(ACC) - mean, 0.0)
        squares += deviation * deviation
    tl.store(sum_ptr + pid, chunk_sum)
    tl.store(m2_ptr + pid, tl.sum(squares, axis=0))


@triton.jit
def std_from_partials(
    sum_ptr, m2_ptr, n, num_partials, PARTIAL_BLOCK, NUM_PARTIALS: tl.constexpr, ACC: tl.constexpr
):
    p = tl.arange(0, NUM_PARTIALS)
    valid = p < num_partials
    sums = tl.load(sum_ptr + p, mask=valid, other=0.0)
    m2 = tl.load(m2_ptr + p, mask=valid, other=0.0)
    counts = tl.where(valid, tl.minimum(n - p.to(tl.int64) * PARTIAL_BLOCK, PARTIAL_BLOCK), 0).to(ACC)
    mean = tl.sum(sums, axis=0) / n
    block_mean = sums / tl.maximum(counts, 1.0)
    spread = tl.where(valid, counts * (block_mean - mean) * (block_mean - mean), 0.0)
    total_m2 = tl.sum(m2 + spread, axis=0)
    # 0 below two elements: a single weight gets no noise, not NaN
    return tl.where(n > 1, tl.sqrt(total_m2 / tl.maximum(n - 1, 1)), 0.0)


@triton.jit
def _alpha_at(alpha_ptr, index, valid, inner, ALPHA_MODE: tl.constexpr):
    if ALPHA_MODE == ALPHA_LAYER:
        alpha = tl.load(alpha_ptr + index * 0, mask=valid, other=0.0)
    elif ALPHA_MODE == ALPHA_CHANNEL:
        # int32 (a weight holds fewer than 2**31 elements): 64-bit division calls a subroutine
        alpha = tl.load(alpha_ptr + index.to(tl.int32) // inner, mask=valid, other=0.0)
    else:
        alpha = tl.load(alpha_ptr + index, mask=valid, other=0.0)
    return alpha


@triton.jit
def noisy_weight_fwd_kernel(
    w_ptr,
    alpha_ptr,
    mask_ptr,
    out_ptr,
    sigma_ptr,
    sum_ptr,
    m2_ptr,
    n,
    inner,
    lam,
    seed,
    seed_offset_ptr,
    num_partials,
    PARTIAL_BLOCK,
    ALPHA_MODE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    ADD_NOISE: tl.constexpr,
    BLOCK: tl.constexpr,
    NUM_PARTIALS: tl.constexpr,
    ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    index = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = index < n
    sigma = std_from_partials(sum_ptr, m2_ptr, n, num_partials, PARTIAL_BLOCK, NUM_PARTIALS, ACC)
    tl.store(sigma_ptr, sigma, mask=pid == 0)
    value = tl.load(w_ptr + index, mask=valid, other=0.0).to(ACC)
    if ADD_NOISE:
        alpha = _alpha_at(alpha_ptr, index, valid, inner, ALPHA_MODE).to(ACC)
        # the call's seed: the host value plus the device-held offset (a CUDA graph replays the read)
        eta = philox_normal_block(seed + tl.load(seed_offset_ptr), pid.to(tl.int64) * BLOCK, BLOCK).to(ACC)
        value = value + (lam * sigma) * alpha * eta
    if HAS_MASK:
        keep = tl.load(mask_ptr + index, mask=valid, other=0) != 0
        value = tl.where(keep, value, 0.0)
    tl.store(out_ptr + index, value.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def noisy_weight_bwd_kernel(
    grad_ptr,
    mask_ptr,
    sigma_ptr,
    grad_w_ptr,
    grad_alpha_ptr,
    inner,
    lam,
    seed,
    seed_offset_ptr,
    blocks_per_row,
    HAS_MASK: tl.constexpr,
    ALPHA_GRAD: tl.constexpr,
    ELEMENTWISE: tl.constexpr,
    ALIGNED: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    # grid: (output channel, block of the channel's inner elements)
    row = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    column = block * BLOCK + tl.arange(0, BLOCK)
    valid = column < inner
    index = row * inner + column
    grad = tl.load(grad_ptr + index, mask=valid, other=0.0)
    if HAS_MASK:
        keep = tl.load(mask_ptr + index, mask=valid, other=0) != 0
        grad = tl.where(keep, grad, 0.0)
    tl.store(grad_w_ptr + index, grad, mask=valid)
    if ALPHA_GRAD:
        scale = lam * tl.load(sigma_ptr).to(ACC)
        seed = seed + tl.load(seed_offset_ptr)
        if ALIGNED:  # every block starts at a multiple of 4: whole Philox calls
            eta = philox_normal_block(seed, row * inner + block * BLOCK, BLOCK)
        else:
            eta = philox_normal(seed, index)
        contribution = grad.to(ACC) * eta.to(ACC) * scale
        if ELEMENTWISE:
            tl.store(grad_alpha_ptr + index, contribution.to(grad_alpha_ptr.dtype.element_ty), mask=valid)
        else:
            # one partial per (channel, block); the launcher sums them in a fixed order
            tl.store(grad_alpha_ptr + row * blocks_per_row + block, tl.sum(contribution, axis=0))
