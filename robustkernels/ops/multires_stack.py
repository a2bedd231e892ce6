"""The multi-resolution input stack: its kernels from Python and its ops' fakes.

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
noise is never regenerated nor stored.

The ops and their autograd are C++ (csrc/ops/multires_stack.cpp): the dispatcher runs the kernel
of x's device, the C++ one on CPU (robustkernels::multires_stack_*_kernel, which builds its resize
tables itself) and on CUDA the Triton kernels registered here (there is no CUDA C++ kernel). This
module adds the kernels the use_backend override chooses (the C++ kernels, Triton, the reference)
and the fakes that torch.compile traces with.
"""

import itertools

import torch

from robustkernels import _extension
from robustkernels.ops import backend
from robustkernels.ops import multires_stack_checks as checks
from robustkernels.ops.device_values import constant_tensor
from robustkernels.ops.resize_tables import dense_tables, view_matrices
from robustkernels.ops.seed_tensor import check_seed_offset, check_seed_tensor, offset_or_zero
from robustkernels.ops.seed_tensor import seed_offset as seed_offset_value
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


def pack_bits(passes: torch.Tensor) -> torch.Tensor:
    """bool [..., W] -> uint8 [..., ceil(W / 8)], bit k of byte j = passes[..., 8 j + k]."""
    width = passes.shape[-1]
    padded = torch.nn.functional.pad(passes.to(torch.uint8), (0, (-width) % 8))
    # explicit sizes, not -1: an empty batch has no elements to infer them from
    groups = padded.reshape(*passes.shape[:-1], padded.shape[-1] // 8, 8).to(torch.int32)
    weights = constant_tensor([1 << k for k in range(8)], torch.int32, passes.device)
    return (groups * weights).sum(dim=-1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of pack_bits: uint8 [..., ceil(W / 8)] -> bool [..., W]."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], 8 * packed.shape[-1])[..., :width].bool()


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
    scalars = dict(contrast_low="fp32", contrast_high="fp32", seed="i64", seed_offset_ptr=torch.int64)
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
    x, sizes, jitter, noise, noise_kind, contrast, interpolation, antialias, adjust_contrast, seed, seed_offset=None
):  # fmt: skip
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
    meta = constant_tensor(
        [
            (rh, rw, *offsets)
            for (rh, rw), offsets in zip(sizes, noise_layout(b, c, h, w, sizes), strict=True)
        ],
        torch.int64,
        x.device,
    )
    multires_stack_fwd_kernel[(b, v)](
        x, out, mask, down_y, down_x, up_y, up_x, meta,
        b, c, h, w, v, jitter, float(noise), float(contrast[0]), float(contrast[1]), seed,
        offset_or_zero(seed_offset, x.device), **launch,
    )  # fmt: skip
    return out, mask


def _backward_triton(
    grad, clip_mask, x, sizes, jitter, contrast, interpolation, antialias, adjust_contrast, seed, seed_offset=None
):  # fmt: skip
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
        b, c, h, w, v, jitter, float(contrast[0]), float(contrast[1]), seed,
        offset_or_zero(seed_offset, grad.device), **launch,
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
        weights = constant_tensor(grey_weights(channels), acc, grad.device)
        dx += weights.reshape(1, -1, 1, 1) * d_grey_mean / (h * w)
    return dx.to(grad.dtype).contiguous()


def _forward(name, *args, seed_offset=None):
    """The forward kernel of backend `name` on the op's arguments, checked here; a seed_offset (a
    0-dim int64 tensor on x's device) is added to the seed."""
    x, _, _, jitter, noise, noise_kind, low, high, interpolation, antialias, adjust_contrast, seed = args
    sizes = checks.check_op_args(*args)
    check_seed_offset(seed_offset, x, "multires_stack")
    if name == "cpp":
        return torch.ops.robustkernels.multires_stack_fwd_kernel(*args, seed_offset)
    if name == "triton" and _fits_triton(*x.shape[-2:]):
        return _forward_triton(
            x, sizes, jitter, noise, noise_kind, (low, high), interpolation, antialias, adjust_contrast, seed,
            seed_offset,
        )  # fmt: skip
    seed = seed + seed_offset_value(seed_offset)  # the reference reads a device-held offset on the host
    settings = (
        sizes,
        jitter,
        noise,
        noise_kind,
        (low, high),
        interpolation,
        antialias,
        adjust_contrast,
        seed,
    )
    return _forward_reference(x, *settings)


def _backward(name, *args, seed_offset=None):
    """The backward kernel of backend `name` on the op's arguments, checked here."""
    op = "multires_stack_backward"
    grad, clip_mask, x, heights, widths, jitter, low, high, interpolation, *switches, seed = args
    checks.check_backward_args(grad, clip_mask, x, heights, widths, op)
    sizes = checks.check_op_args(
        grad, heights, widths, jitter, 0.0, "uniform", low, high, interpolation, *switches, seed, op, "grad"
    )
    check_seed_offset(seed_offset, grad, op)
    if name == "cpp":
        return torch.ops.robustkernels.multires_stack_bwd_kernel(*args, seed_offset)
    if name == "triton" and _fits_triton(*grad.shape[-2:]):
        settings = (sizes, jitter, (low, high), interpolation, *switches, seed, seed_offset)
        return _backward_triton(grad, clip_mask, x, *settings)
    settings = (sizes, jitter, (low, high), interpolation, *switches, seed + seed_offset_value(seed_offset))
    return _backward_reference(grad, clip_mask, x, *settings)


# The kernel ops' arguments, then their optional seed_offset (given positionally by the dispatcher).
_FORWARD_ARGS, _BACKWARD_ARGS = 12, 12


def _with_offset(args: tuple, count: int) -> tuple[tuple, torch.Tensor | None]:
    return (args[:count], args[count]) if len(args) > count else (args, None)


def _python_forward(*args):
    """The kernel of the backend use_backend chose (robustkernels::multires_stack_fwd_python)."""
    args, offset = _with_offset(args, _FORWARD_ARGS)
    name = backend.select_without_cuda("multires_stack", args[0].device, _FAMILY)
    return _forward(name, *args, seed_offset=offset)


def _python_backward(*args):
    """robustkernels::multires_stack_bwd_python: the backward kernel of the backend use_backend chose."""
    args, offset = _with_offset(args, _BACKWARD_ARGS)
    name = backend.select_without_cuda("multires_stack_backward", args[0].device, _FAMILY)
    return _backward(name, *args, seed_offset=offset)


def _cuda_forward(*args):
    """The CUDA kernel (there is no CUDA C++ one): Triton, else the reference."""
    args, offset = _with_offset(args, _FORWARD_ARGS)
    return _forward("triton" if _triton_available else "reference", *args, seed_offset=offset)


def _cuda_backward(*args):
    args, offset = _with_offset(args, _BACKWARD_ARGS)
    return _backward("triton" if _triton_available else "reference", *args, seed_offset=offset)


def reference_stack(*args):
    """The stack where robustkernels._C is not built: the reference (autograd differentiates it),
    its arguments checked in Python."""
    return _forward("reference", *args)[0]


def _multires_stack_fake(x, heights, *args, seed_tensor=None):
    if len(args) == 11:  # seed_tensor given positionally
        *args, seed_tensor = args
    checks.check_op_args(x, heights, *args)
    if seed_tensor is not None:
        check_seed_tensor(seed_tensor, "multires_stack", x.device)
    b, c, h, w = x.shape
    v = len(heights)
    return x.new_empty((b, c * v, h, w)), x.new_empty((b, c * v, h, (w + 7) // 8), dtype=torch.uint8)


def _multires_stack_backward_fake(grad, clip_mask, x, heights, widths, *_settings, seed_tensor=None):
    checks.check_backward_args(grad, clip_mask, x, heights, widths, "multires_stack_backward")
    b, cv, h, w = grad.shape
    return grad.new_empty((b, cv // len(heights), h, w))


if _extension.is_loaded():
    # The ops are defined, and dispatched with their autograd, in C++ (csrc/ops/multires_stack.cpp).
    multires_stack = torch.ops.robustkernels.multires_stack.default
    multires_stack_backward = torch.ops.robustkernels.multires_stack_backward.default
    torch.library.register_fake("robustkernels::multires_stack")(_multires_stack_fake)
    torch.library.register_fake("robustkernels::multires_stack_backward")(_multires_stack_backward_fake)
    for _op, _kernel in (
        ("multires_stack_fwd_python", _python_forward),
        ("multires_stack_bwd_python", _python_backward),
    ):
        torch.library.impl(f"robustkernels::{_op}", "CompositeExplicitAutograd")(_kernel)
    torch.library.impl("robustkernels::multires_stack_fwd_kernel", "CUDA")(_cuda_forward)
    torch.library.impl("robustkernels::multires_stack_bwd_kernel", "CUDA")(_cuda_backward)
