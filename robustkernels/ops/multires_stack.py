"""The multi-resolution input stack as autograd-aware custom ops.

robustkernels::multires_stack(x [B, C, H, W], heights, widths, jitter, noise, noise_kind,
    contrast_low, contrast_high, interpolation, antialias, adjust_contrast, seed)
    -> (out [B, C * V, H, W], clip_mask uint8 [B, C * V, H, ceil(W / 8)])
robustkernels::multires_stack_backward(grad [B, C * V, H, W], clip_mask, x, heights, widths,
    jitter, contrast_low, contrast_high, interpolation, antialias, adjust_contrast, seed)
    -> dx [B, C, H, W]

The recipe and its random streams are specified in robustkernels/reference/multires_stack.py.
clip_mask holds one bit per output element (bit k of byte j is column 8 j + k): set
where the clip to [0, 1] passes the gradient. Between adjust_contrast's clamp and the
final clip everything is linear in x, so the backward needs that mask, the per-image
contrast and shifts, which it regenerates from the seed, and x, from which it recomputes
where adjust_contrast's clamp passed (x is saved anyway: no second mask is stored); the
noise is never regenerated nor stored. Backends: the
C++ kernel ops (robustkernels::multires_stack_*_kernel, CPU), the Triton kernels, or the
reference; on GPUs the stack runs with Triton (there is no CUDA C++ kernel).
"""

import itertools

import torch

from robustkernels.ops import backend, validation
from robustkernels.ops.resize_tables import banded_tables, dense_tables, view_matrices
from robustkernels.reference.multires_stack import (
    contrast_means,
    grey_weights,
    multires_views,
    noise_layout,
    roll_per_image,
    view_parameters,
)
from robustkernels.triton import available as _triton_available

if _triton_available:
    import triton

    from robustkernels.triton.multires_stack import multires_stack_bwd_kernel, multires_stack_fwd_kernel
    from robustkernels.triton.specialisation import CHECKED_DTYPES, MAX_REGISTERS, accumulator, specialise

_FAMILY = "multi-resolution stack"
# The Triton kernels hold whole image planes in square blocks of a power of two from
# _MIN_TRITON_BLOCK to _MAX_TRITON_BLOCK (one specialisation each); larger images run with the reference.
_MIN_TRITON_BLOCK = 16
_MAX_TRITON_BLOCK = 32


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_switches(antialias, adjust_contrast, op: str) -> None:
    for switch, value in (("antialias", antialias), ("adjust_contrast", adjust_contrast)):
        if not isinstance(value, bool):
            raise TypeError(f"robustkernels.{op}: {switch} must be a bool, got {type(value).__name__}")


def _check_op_args(
    x, heights, widths, jitter, noise_kind, contrast, interpolation, switches, seed, op: str, name="x"
):
    validation.check_tensor(name, x, op)
    check_switches(*switches, op)
    if len(heights) != len(widths):
        raise ValueError(
            f"robustkernels.{op}: heights and widths differ in length ({len(heights)}, {len(widths)})"
        )
    sizes = validation.multires_sizes(x, list(zip(heights, widths, strict=True)), op)
    validation.multires_options(jitter, 0.0, noise_kind, contrast, interpolation, op)
    validation.check_seed(seed, op)
    return sizes


def pack_bits(passes: torch.Tensor) -> torch.Tensor:
    """bool [..., W] -> uint8 [..., ceil(W / 8)], bit k of byte j = passes[..., 8 j + k]."""
    width = passes.shape[-1]
    padded = torch.nn.functional.pad(passes.to(torch.uint8), (0, (-width) % 8))
    # explicit sizes, not -1: an empty batch has no elements to infer them from
    groups = padded.reshape(*passes.shape[:-1], padded.shape[-1] // 8, 8).to(torch.int32)
    weights = torch.tensor([1 << k for k in range(8)], dtype=torch.int32, device=passes.device)
    return (groups * weights).sum(dim=-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of pack_bits: uint8 [..., ceil(W / 8)] -> bool [..., W]."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], 8 * packed.shape[-1])[..., :width].bool()


def _flat_offsets(x: torch.Tensor, sizes) -> list[int]:
    b, c, h, w = x.shape
    return [offset for pair in noise_layout(b, c, h, w, sizes) for offset in pair]


def _fits_triton(height: int, width: int) -> bool:
    return max(height, width) <= _MAX_TRITON_BLOCK


def _triton_blocks(height: int, width: int) -> dict:
    # the views' sizes lie within the image: one square block holds the image and every view
    block = max(_MIN_TRITON_BLOCK, triton.next_power_of_2(max(height, width)))
    # at most 8 elements of a plane a thread: the five resize matrices stay in registers
    warps = max(4, block * block // 128)
    return dict(BLOCK_H=block, BLOCK_W=block, BLOCK_R=block, num_warps=warps, maxnreg=MAX_REGISTERS)


def _forward_launch(
    height: int, width: int, noise: float, noise_kind: str, adjust_contrast: bool, dtype: torch.dtype
) -> dict:
    return dict(
        # the kind of noise matters only with noise: one specialisation without
        GAUSSIAN=noise != 0 and noise_kind == "gaussian",
        NOISE=noise != 0,
        CONTRAST=adjust_contrast,
        **_triton_blocks(height, width),
        ACC=accumulator(dtype),
    )


def _backward_launch(height: int, width: int, adjust_contrast: bool, dtype: torch.dtype) -> dict:
    return dict(CONTRAST=adjust_contrast, **_triton_blocks(height, width), ACC=accumulator(dtype))


def triton_specialisations():
    """Every kernel specialisation the Triton launchers below can launch
    (tests/test_triton_compile.py compiles each)."""
    scalars = dict(contrast_low="fp32", contrast_high="fp32", seed="i64")
    sides = range(1, _MAX_TRITON_BLOCK + 1)
    for dtype, side in itertools.product(CHECKED_DTYPES, sides):
        tables = dict.fromkeys(("down_y_ptr", "down_x_ptr", "up_y_ptr", "up_x_ptr"), _acc_dtype(dtype))
        pointers = dict(mask_ptr=torch.uint8, **tables)
        for adjust_contrast in (False, True):
            for noise, noise_kind in ((0.0, "uniform"), (0.1, "uniform"), (0.1, "gaussian")):
                yield specialise(
                    multires_stack_fwd_kernel,
                    _forward_launch(side, side, noise, noise_kind, adjust_contrast, dtype), dtype,
                    meta_ptr=torch.int64, noise="fp32", **pointers, **scalars,
                )  # fmt: skip
            yield specialise(
                multires_stack_bwd_kernel, _backward_launch(side, side, adjust_contrast, dtype), dtype,
                scratch_ptr=_acc_dtype(dtype), **pointers, **scalars,
            )  # fmt: skip


def _forward_triton(
    x, sizes, jitter, noise, noise_kind, contrast, interpolation, antialias, adjust_contrast, seed
):
    b, c, h, w = x.shape
    v = len(sizes)
    x = x.contiguous()
    out = torch.empty((b, c * v, h, w), dtype=x.dtype, device=x.device)
    mask = torch.empty((b, c * v, h, (w + 7) // 8), dtype=torch.uint8, device=x.device)
    launch = _forward_launch(h, w, noise, noise_kind, adjust_contrast, x.dtype)
    acc = _acc_dtype(x.dtype)
    down_y, down_x, up_y, up_x = dense_tables(
        h, w, tuple(sizes), interpolation, antialias, launch["BLOCK_R"], acc, x.device
    )
    meta = torch.tensor(
        [
            [rh, rw, *offsets]
            for (rh, rw), offsets in zip(sizes, noise_layout(b, c, h, w, sizes), strict=True)
        ],
        dtype=torch.int64,
        device=x.device,
    )
    multires_stack_fwd_kernel[(b, v)](
        x, out, mask, down_y, down_x, up_y, up_x, meta,
        b, c, h, w, v, jitter, float(noise), float(contrast[0]), float(contrast[1]), seed, **launch,
    )  # fmt: skip
    return out, mask


def _backward_triton(
    grad, clip_mask, x, sizes, jitter, contrast, interpolation, antialias, adjust_contrast, seed
):
    b, cv, h, w = grad.shape
    v = len(sizes)
    c = cv // v
    acc = _acc_dtype(grad.dtype)
    # the kernel sums the views' gradients in dx: in the accumulation dtype, one rounding at the end
    dx = torch.empty((b, c, h, w), dtype=acc, device=grad.device)
    # one view's gradient of every channel, before the colour mix's channel sum is known
    scratch = torch.empty((b, c, h, w), dtype=acc, device=grad.device)
    launch = _backward_launch(h, w, adjust_contrast, grad.dtype)
    down_y, down_x, up_y, up_x = dense_tables(
        h, w, tuple(sizes), interpolation, antialias, launch["BLOCK_R"], acc, grad.device
    )
    multires_stack_bwd_kernel[(b,)](
        grad.contiguous(), clip_mask.contiguous(), x.contiguous(), dx, scratch, down_y, down_x, up_y, up_x,
        b, c, h, w, v, jitter, float(contrast[0]), float(contrast[1]), seed, **launch,
    )  # fmt: skip
    return dx.to(grad.dtype)


def _forward_reference(
    x, sizes, jitter, noise, noise_kind, contrast, interpolation, antialias, adjust_contrast, seed
):
    views = multires_views(
        x, sizes, jitter=jitter, noise=noise, noise_kind=noise_kind, contrast=contrast,
        interpolation=interpolation, seed=seed, antialias=antialias, adjust_contrast=adjust_contrast,
    )  # fmt: skip
    views = torch.cat(views, dim=1)
    return views.clamp(0, 1).to(x.dtype).contiguous(), pack_bits((views >= 0) & (views <= 1)).contiguous()


def _backward_reference(
    grad, clip_mask, x, sizes, jitter, contrast, interpolation, antialias, adjust_contrast, seed
):
    """The transpose of the linear part, view by view, in torch ops: the masked gradient
    through the two resizes (F.interpolate's matrices), the shift undone, the colour mix,
    then adjust_contrast's clamp (recomputed from x) and blend. (Autograd is not available
    inside a custom op's implementation.)"""
    b, cv, h, w = grad.shape
    channels = cv // len(sizes)
    acc = _acc_dtype(grad.dtype)
    zero = torch.zeros((), dtype=acc, device=grad.device)
    masked = torch.where(unpack_bits(clip_mask, w), grad.to(acc), zero)
    c, shift_y, shift_x = view_parameters(seed, len(sizes), b, jitter, contrast, grad.device)
    x = x.to(acc)
    grey_mean = contrast_means(x) if adjust_contrast else None
    dx = torch.zeros((b, channels, h, w), dtype=acc, device=grad.device)
    d_grey_mean = torch.zeros((b, 1, 1, 1), dtype=acc, device=grad.device)
    for v, size in enumerate(sizes):
        d = masked[:, v * channels : (v + 1) * channels]
        if size != (h, w):
            down_y, down_x, up_y, up_x = (
                m.to(device=grad.device, dtype=acc)
                for m in view_matrices(h, w, size, interpolation, antialias)
            )
            d = torch.einsum("yr,bcyx,xs->bcrs", up_y, d, up_x)
            d = torch.einsum("ry,bcrs,sx->bcyx", down_y, d, down_x)
        d = roll_per_image(d, -shift_y[v], -shift_x[v])
        cv_ = c[v].to(acc).reshape(b, 1, 1, 1)
        d = cv_ * d + (1 - cv_) * d.sum(dim=1, keepdim=True) / channels  # through the colour mix
        if adjust_contrast:
            blend = cv_ * x + (1 - cv_) * grey_mean
            d = torch.where((blend >= 0) & (blend <= 1), d, zero)
            d_grey_mean += (1 - cv_) * d.sum(dim=(1, 2, 3), keepdim=True)
            d = cv_ * d
        dx += d
    if adjust_contrast:
        weights = torch.tensor(grey_weights(channels), dtype=acc, device=grad.device)
        dx += weights.reshape(1, -1, 1, 1) * d_grey_mean / (h * w)
    return dx.to(grad.dtype).contiguous()


@torch.library.custom_op("robustkernels::multires_stack", mutates_args=())
def multires_stack(
    x: torch.Tensor,
    heights: list[int],
    widths: list[int],
    jitter: int,
    noise: float,
    noise_kind: str,
    contrast_low: float,
    contrast_high: float,
    interpolation: str,
    antialias: bool,
    adjust_contrast: bool,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    contrast = (contrast_low, contrast_high)
    switches = (antialias, adjust_contrast)
    sizes = _check_op_args(
        x, heights, widths, jitter, noise_kind, contrast, interpolation, switches, seed, "multires_stack"
    )
    args = (sizes, jitter, noise, noise_kind, contrast, interpolation, *switches, seed)
    name = backend.select_without_cuda("multires_stack", x.device, _FAMILY)
    if name == "cpp":
        _, _, h, w = x.shape
        starts, weights = banded_tables(h, w, tuple(sizes), interpolation, antialias, _acc_dtype(x.dtype))
        return torch.ops.robustkernels.multires_stack_fwd_kernel(
            x, heights, widths, starts, weights, _flat_offsets(x, sizes), jitter, noise, noise_kind,
            contrast_low, contrast_high, adjust_contrast, seed,
        )  # fmt: skip
    if name == "triton" and _fits_triton(*x.shape[-2:]):
        return _forward_triton(x, *args)
    return _forward_reference(x, *args)


@multires_stack.register_fake
def _multires_stack_fake(
    x, heights, widths, jitter, noise, noise_kind, contrast_low, contrast_high, interpolation, antialias,
    adjust_contrast, seed,
):  # fmt: skip
    b, c, h, w = x.shape
    v = len(heights)
    return x.new_empty((b, c * v, h, w)), x.new_empty((b, c * v, h, (w + 7) // 8), dtype=torch.uint8)


def _check_backward_args(grad, clip_mask, x, heights, widths, op: str) -> None:
    validation.check_tensor("grad", grad, op)
    validation.check_tensor("clip_mask", clip_mask, op)
    validation.check_tensor("x", x, op)
    if grad.dtype not in validation.KERNEL_FLOAT_DTYPES:
        raise TypeError(
            f"robustkernels.{op}: grad must be float32, float64, float16 or bfloat16, got {grad.dtype}"
        )
    if grad.dim() != 4 or len(heights) == 0 or grad.shape[1] % len(heights) != 0:
        raise ValueError(
            f"robustkernels.{op}: grad must be [B, C * V, H, W] for V = {len(heights)} views, got {tuple(grad.shape)}"
        )
    b, cv, h, w = grad.shape
    if clip_mask.dtype != torch.uint8 or clip_mask.shape != (b, cv, h, (w + 7) // 8):
        raise ValueError(
            f"robustkernels.{op}: clip_mask must be uint8 [{b}, {cv}, {h}, {(w + 7) // 8}], "
            f"got {clip_mask.dtype} {tuple(clip_mask.shape)}"
        )
    if clip_mask.device != grad.device:
        raise ValueError(
            f"robustkernels.{op}: clip_mask must be on grad's device {grad.device}, got {clip_mask.device}"
        )
    if x.shape != (b, cv // len(heights), h, w) or x.dtype != grad.dtype or x.device != grad.device:
        raise ValueError(
            f"robustkernels.{op}: x must be the forward's input, {grad.dtype} [{b}, {cv // len(heights)}, {h}, "
            f"{w}] on {grad.device}, got {x.dtype} {tuple(x.shape)} on {x.device}"
        )


@torch.library.custom_op("robustkernels::multires_stack_backward", mutates_args=())
def multires_stack_backward(
    grad: torch.Tensor,
    clip_mask: torch.Tensor,
    x: torch.Tensor,
    heights: list[int],
    widths: list[int],
    jitter: int,
    contrast_low: float,
    contrast_high: float,
    interpolation: str,
    antialias: bool,
    adjust_contrast: bool,
    seed: int,
) -> torch.Tensor:
    op = "multires_stack_backward"
    _check_backward_args(grad, clip_mask, x, heights, widths, op)
    contrast = (contrast_low, contrast_high)
    switches = (antialias, adjust_contrast)
    sizes = _check_op_args(
        grad, heights, widths, jitter, "uniform", contrast, interpolation, switches, seed, op, name="grad"
    )
    args = (sizes, jitter, contrast, interpolation, *switches, seed)
    name = backend.select_without_cuda(op, grad.device, _FAMILY)
    if name == "cpp":
        _, _, h, w = grad.shape
        starts, weights = banded_tables(h, w, tuple(sizes), interpolation, antialias, _acc_dtype(grad.dtype))
        return torch.ops.robustkernels.multires_stack_bwd_kernel(
            grad, clip_mask, x, heights, widths, starts, weights, jitter, contrast_low, contrast_high,
            adjust_contrast, seed,
        )  # fmt: skip
    if name == "triton" and _fits_triton(*grad.shape[-2:]):
        return _backward_triton(grad, clip_mask, x, *args)
    return _backward_reference(grad, clip_mask, x, *args)


@multires_stack_backward.register_fake
def _multires_stack_backward_fake(
    grad, clip_mask, x, heights, widths, jitter, contrast_low, contrast_high, interpolation, antialias,
    adjust_contrast, seed,
):  # fmt: skip
    _check_backward_args(grad, clip_mask, x, heights, widths, "multires_stack_backward")
    b, cv, h, w = grad.shape
    return grad.new_empty((b, cv // len(heights), h, w))


def _setup_context(ctx, inputs, output):
    x, heights, widths, jitter, _, _, contrast_low, contrast_high, interpolation, *switches, seed = inputs
    ctx.save_for_backward(output[1], x)
    ctx.args = (heights, widths, jitter, contrast_low, contrast_high, interpolation, *switches, seed)
    ctx.backend = backend.explicit_choice()


def _backward(ctx, grad_out, _grad_mask):
    nones = (None,) * 11
    if not ctx.needs_input_grad[0]:
        return (None, *nones)
    clip_mask, x = ctx.saved_tensors
    with backend.restore_choice(ctx.backend):
        return (multires_stack_backward(grad_out, clip_mask, x, *ctx.args), *nones)


multires_stack.register_autograd(_backward, setup_context=_setup_context)
