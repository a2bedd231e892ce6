"""Triton kernels of the multi-resolution input stack (the recipe and its random streams
are specified in robustkernels/reference/multires_stack.py).

Each resize is a dense matrix product on one image plane: down = Dy @ R @ Dx^T and
up = Uy @ (down + noise) @ Ux^T, with the matrices zero-padded to the block sizes
(full-size views use identities, which keeps one code path and is exact). The
per-image circular shift is folded into Dy and Dx by gathering their columns, so the
shifted image is never formed (adjust_contrast and the colour mix are per pixel, so they run
on the unshifted planes). The forward runs one program per (image, view); the
backward one program per image, looping over the views, so dx needs no atomics.
Whole planes stay in registers, so the launcher sends only images up to 32 x 32 here.
"""

import triton
import triton.language as tl

from robustkernels.triton.philox import philox_normal, philox_uniform


@triton.jit
def _image_params(seed, counter, jitter, contrast_low, contrast_high, H, W):
    """(c, dy, dx) of one (view, image): dy in [0, H), dx in [0, W)."""
    w0, w1, w2, _ = tl.randint4x(seed, counter)
    u = tl.random.uint_to_uniform_float(
        w0
    )  # what tl.rand(seed, counter) returns, without a second Philox call
    c = contrast_low + (contrast_high - contrast_low) * u
    span = (2 * jitter + 1).to(tl.uint64)
    # int32 shifts (below 2 * jitter + 1): the per-element modulos of _view_matrices stay 32-bit
    dy = ((w1.to(tl.uint64) * span) >> 32).to(tl.int32) - jitter
    dx = ((w2.to(tl.uint64) * span) >> 32).to(tl.int32) - jitter
    return c, ((dy % H) + H) % H, ((dx % W) + W) % W


@triton.jit
def _view_matrices(
    down_y_ptr, down_x_ptr, up_y_ptr, up_x_ptr, v, dy, dx, H, W, BLOCK_H, BLOCK_W, BLOCK_R, ACC
):
    """Dy and Dx with the shift folded in (column s of the shifted matrix is column (s + d) % n),
    and Uy, Ux, as [BLOCK_R, BLOCK_H], [BLOCK_R, BLOCK_W], [BLOCK_H, BLOCK_R], [BLOCK_W, BLOCK_R]."""
    r = tl.arange(0, BLOCK_R)
    ys = tl.arange(0, BLOCK_H)
    xs = tl.arange(0, BLOCK_W)
    ys_src = (ys + dy) % H
    xs_src = (xs + dx) % W
    dyr = tl.load(
        down_y_ptr + (v * BLOCK_R + r[:, None]) * H + ys_src[None, :], mask=ys[None, :] < H, other=0.0
    )
    dxr = tl.load(
        down_x_ptr + (v * BLOCK_R + r[:, None]) * W + xs_src[None, :], mask=xs[None, :] < W, other=0.0
    )
    uy = tl.load(up_y_ptr + (v * H + ys[:, None]) * BLOCK_R + r[None, :], mask=ys[:, None] < H, other=0.0)
    ux = tl.load(up_x_ptr + (v * W + xs[:, None]) * BLOCK_R + r[None, :], mask=xs[:, None] < W, other=0.0)
    return dyr.to(ACC), dxr.to(ACC), uy.to(ACC), ux.to(ACC)


@triton.jit
def _grey_weight(ch, C, ACC: tl.constexpr):
    """adjust_contrast's weight of channel ch in the grey level (torchvision's RGB weights for
    3 channels, 1 / C otherwise)."""
    # exact integers divided in ACC: the weights rounded once, as the reference's
    rgb = tl.where(ch == 0, 2989, tl.where(ch == 1, 5870, 1140)).to(ACC) / 10000
    return tl.where(C == 3, rgb, 1 / C.to(ACC))


@triton.jit
def _grey_mean(
    image, plane, inside, C, H, W, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr
):
    """adjust_contrast's m: the mean over the image of its grey level."""
    grey = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for ch in range(C):
        grey += _grey_weight(ch, C, ACC) * tl.load(image + ch * H * W + plane, mask=inside, other=0.0).to(ACC)
    return tl.sum(tl.sum(grey, axis=1), axis=0) / (H * W)


@triton.jit
def _contrasted(image, ch, plane, inside, c, grey, H, W, CONTRAST: tl.constexpr, ACC: tl.constexpr):
    """Channel ch of the image after adjust_contrast (CONTRAST) or as it is, zero outside."""
    values = tl.load(image + ch * H * W + plane, mask=inside, other=0.0).to(ACC)
    if CONTRAST:
        values = tl.where(inside, tl.minimum(tl.maximum(c * values + (1 - c) * grey, 0.0), 1.0), 0.0)
    return values


@triton.jit
def _noise(seed, first, rows, cols, row_stride, noise, GAUSSIAN: tl.constexpr, ACC: tl.constexpr):
    """noise * (U[0, 1) or N(0, 1)) of elements first + i * row_stride + j, zero outside rows x cols."""
    index = first + rows[:, None] * row_stride + cols[None, :]
    if GAUSSIAN:
        values = philox_normal(seed, index)
    else:
        values = philox_uniform(seed, index)
    return (noise * values).to(ACC)


@triton.jit(do_not_specialize=["seed", "jitter"])
def multires_stack_fwd_kernel(
    x_ptr, out_ptr, mask_ptr, down_y_ptr, down_x_ptr, up_y_ptr, up_x_ptr, meta_ptr,
    B, C, H, W, V, jitter, noise, contrast_low, contrast_high, seed, seed_offset_ptr,
    GAUSSIAN: tl.constexpr, NOISE: tl.constexpr, CONTRAST: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    v = tl.program_id(1).to(tl.int64)
    seed = seed + tl.load(seed_offset_ptr)  # a device-held offset: a CUDA graph replays the read
    rh = tl.load(meta_ptr + 4 * v)
    rw = tl.load(meta_ptr + 4 * v + 1)
    low_offset = tl.load(meta_ptr + 4 * v + 2)
    high_offset = tl.load(meta_ptr + 4 * v + 3)
    c, dy, dx = _image_params(seed, v * B + b, jitter, contrast_low, contrast_high, H, W)
    c = c.to(ACC)
    dyr, dxr, uy, ux = _view_matrices(
        down_y_ptr, down_x_ptr, up_y_ptr, up_x_ptr, v, dy, dx, H, W, BLOCK_H, BLOCK_W, BLOCK_R, ACC
    )
    ys = tl.arange(0, BLOCK_H)
    xs = tl.arange(0, BLOCK_W)
    r = tl.arange(0, BLOCK_R)
    inside = (ys[:, None] < H) & (xs[None, :] < W)
    plane = ys[:, None] * W + xs[None, :]
    image = x_ptr + b * C * H * W
    grey = 0.0
    if CONTRAST:
        grey = _grey_mean(image, plane, inside, C, H, W, BLOCK_H, BLOCK_W, ACC)
    mean = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for ch in range(C):
        mean += _contrasted(image, ch, plane, inside, c, grey, H, W, CONTRAST, ACC)
    mean = mean / C
    mask_row = (W + 7) // 8
    for ch in range(C):
        mixed = c * _contrasted(image, ch, plane, inside, c, grey, H, W, CONTRAST, ACC) + (1 - c) * mean
        low = tl.dot(tl.dot(dyr, mixed, input_precision="ieee"), tl.trans(dxr), input_precision="ieee")
        plane_index = b * C + ch
        if NOISE:
            low += _noise(seed, low_offset + plane_index * rh * rw, r, r, rw, noise, GAUSSIAN, ACC)
            low = tl.where((r[:, None] < rh) & (r[None, :] < rw), low, 0.0)
        up = tl.dot(tl.dot(uy, low, input_precision="ieee"), tl.trans(ux), input_precision="ieee")
        if NOISE:
            up += _noise(seed, high_offset + plane_index * H * W, ys, xs, W, noise, GAUSSIAN, ACC)
        out_plane = (b * V + v) * C + ch
        tl.store(out_ptr + out_plane * H * W + plane, tl.minimum(tl.maximum(up, 0.0), 1.0), mask=inside)
        passes = ((up >= 0) & (up <= 1) & inside).to(tl.int32)
        weights = (1 << tl.arange(0, 8)).to(tl.int32)
        bits = tl.sum(tl.reshape(passes, (BLOCK_H, BLOCK_W // 8, 8)) * weights[None, None, :], axis=2)
        bytes_ = tl.arange(0, BLOCK_W // 8)
        tl.store(
            mask_ptr + (out_plane * H + ys[:, None]) * mask_row + bytes_[None, :],
            bits.to(tl.uint8),
            mask=(ys[:, None] < H) & (bytes_[None, :] < mask_row),
        )


@triton.jit(do_not_specialize=["seed", "jitter"])
def multires_stack_bwd_kernel(
    grad_ptr, mask_ptr, x_ptr, dx_ptr, scratch_ptr, down_y_ptr, down_x_ptr, up_y_ptr, up_x_ptr,
    B, C, H, W, V, jitter, contrast_low, contrast_high, seed, seed_offset_ptr,
    CONTRAST: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_R: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    seed = seed + tl.load(seed_offset_ptr)
    ys = tl.arange(0, BLOCK_H)
    xs = tl.arange(0, BLOCK_W)
    inside = (ys[:, None] < H) & (xs[None, :] < W)
    plane = ys[:, None] * W + xs[None, :]
    mask_row = (W + 7) // 8
    bit_address = ys[:, None] * mask_row + xs[None, :] // 8
    image = x_ptr + b * C * H * W
    dx_image = dx_ptr + b * C * H * W
    scratch = scratch_ptr + b * C * H * W
    grey = 0.0
    if CONTRAST:
        grey = _grey_mean(image, plane, inside, C, H, W, BLOCK_H, BLOCK_W, ACC)
    d_grey = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
    for v in range(V):
        c, dy, dx = _image_params(seed, v * B + b, jitter, contrast_low, contrast_high, H, W)
        c = c.to(ACC)
        dyr, dxr, uy, ux = _view_matrices(
            down_y_ptr, down_x_ptr, up_y_ptr, up_x_ptr, v, dy, dx, H, W, BLOCK_H, BLOCK_W, BLOCK_R, ACC
        )
        d_sum = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC)
        for ch in range(C):
            out_plane = (b * V + v) * C + ch
            g = tl.load(grad_ptr + out_plane * H * W + plane, mask=inside, other=0.0).to(ACC)
            packed = tl.load(mask_ptr + out_plane * H * mask_row + bit_address, mask=inside, other=0).to(
                tl.int32
            )
            g = tl.where(((packed >> (xs[None, :] % 8)) & 1) != 0, g, 0.0)
            d_low = tl.dot(tl.trans(uy), tl.dot(g, ux, input_precision="ieee"), input_precision="ieee")
            d_mixed = tl.dot(
                tl.trans(dyr), tl.dot(d_low, dxr, input_precision="ieee"), input_precision="ieee"
            )
            # kept until the colour mix's channel sum is complete
            tl.store(scratch + ch * H * W + plane, d_mixed, mask=inside)
            d_sum += d_mixed
        tl.debug_barrier()
        share = (1 - c) / C
        for ch in range(C):
            d = c * tl.load(scratch + ch * H * W + plane, mask=inside, other=0.0).to(ACC) + share * d_sum
            if CONTRAST:
                blend = (
                    c * tl.load(image + ch * H * W + plane, mask=inside, other=0.0).to(ACC) + (1 - c) * grey
                )
                d = tl.where(inside & (blend >= 0) & (blend <= 1), d, 0.0)
                d_grey += (1 - c) * d
                d = c * d
            previous = tl.load(dx_image + ch * H * W + plane, mask=inside & (v > 0), other=0.0).to(ACC)
            tl.store(dx_image + ch * H * W + plane, previous + d, mask=inside)
        # the next view reads back what this one stored
        tl.debug_barrier()
    if CONTRAST:
        spread = tl.sum(tl.sum(d_grey, axis=1), axis=0) / (H * W)
        for ch in range(C):
            total = tl.load(dx_image + ch * H * W + plane, mask=inside, other=0.0).to(ACC)
            tl.store(dx_image + ch * H * W + plane, total + _grey_weight(ch, C, ACC) * spread, mask=inside)
