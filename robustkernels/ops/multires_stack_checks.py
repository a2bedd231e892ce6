"""multires_stack's arguments checked in Python: the public function's types (the op's C++ kernels
check the values), and every argument where Python runs the kernel (the use_backend override, the
Triton launchers, the reference) or traces it (the fakes)."""

import torch

from robustkernels.ops import validation


def check_switches(antialias, adjust_contrast, op: str) -> None:
    for switch, value in (("antialias", antialias), ("adjust_contrast", adjust_contrast)):
        if not isinstance(value, bool):
            raise TypeError(f"robustkernels.{op}: {switch} must be a bool, got {type(value).__name__}")


def check_op_args(
    x, heights, widths, jitter, noise, noise_kind, contrast_low, contrast_high, interpolation, antialias,
    adjust_contrast, seed, op="multires_stack", name="x",
):  # fmt: skip
    """Checks the forward op's arguments (the backward's with noise 0); returns the views' sizes."""
    validation.check_tensor(name, x, op)
    check_switches(antialias, adjust_contrast, op)
    if len(heights) != len(widths):
        raise ValueError(
            f"robustkernels.{op}: heights and widths differ in length ({len(heights)}, {len(widths)})"
        )
    sizes = validation.multires_sizes(x, list(zip(heights, widths, strict=True)), op)
    contrast = (contrast_low, contrast_high)
    validation.multires_options(jitter, noise, noise_kind, contrast, interpolation, op)
    validation.check_seed(seed, op)
    return sizes


def _check_number(name: str, value, kind: type, op: str) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an int" if kind is int else "a float"
        raise TypeError(f"robustkernels.{op}: {name} must be {expected}, got {type(value).__name__}")


def check_types(x, resolutions, jitter, noise, noise_kind, contrast, interpolation, switches, seed):
    """The public function's type checks (the op's schema would reject these with a generic
    message; the kernels check the values); returns the views' (heights, widths)."""
    op = "multires_stack"
    validation.check_tensor("x", x, op)
    if isinstance(resolutions, (int, str)) or not hasattr(resolutions, "__len__") or len(resolutions) == 0:
        raise ValueError(f"robustkernels.{op}: resolutions must be a non-empty sequence, got {resolutions!r}")
    heights, widths = [], []
    for r in resolutions:
        pair = (r, r) if isinstance(r, int) else tuple(r) if hasattr(r, "__len__") else ()
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
            raise TypeError(
                f"robustkernels.{op}: each resolution must be an int or an (int, int) pair, got {r!r}"
            )
        heights.append(pair[0])
        widths.append(pair[1])
    _check_number("jitter", jitter, int, op)
    _check_number("noise", noise, (int, float), op)
    if not isinstance(contrast, (tuple, list)) or len(contrast) != 2:
        raise TypeError(f"robustkernels.{op}: contrast must be a (low, high) pair, got {contrast!r}")
    for value in contrast:
        _check_number("contrast", value, (int, float), op)
    for name, value in (("noise_kind", noise_kind), ("interpolation", interpolation)):
        if not isinstance(value, str):
            raise TypeError(f"robustkernels.{op}: {name} must be a str, got {type(value).__name__}")
    check_switches(*switches, op)
    if seed is not None and not isinstance(seed, torch.Tensor):
        _check_number("seed", seed, int, op)
    return heights, widths


def check_backward_args(grad, clip_mask, x, heights, widths, op: str) -> None:
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
