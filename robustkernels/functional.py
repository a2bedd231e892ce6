"""Public functions of robustkernels (the functional counterparts of robustkernels.nn).

A seed of the noisy functions is an int, or a 0-dim int64 CPU tensor holding it: the op reads
the tensor inside, so a compiled caller can change it on every call without a recompile or a
graph break (robustkernels.nn's layers pass their per-call seeds this way).
"""

import torch
import torch.nn.functional as F

from robustkernels import _extension, reference
from robustkernels.ops import crossmax as _crossmax_ops
from robustkernels.ops import direct_calls, noisy_layers, validation
from robustkernels.ops import multires_stack as _multires_ops
from robustkernels.ops import noisy_weight as _noisy_weight_ops
from robustkernels.ops import path_calls as _path_calls
from robustkernels.ops import path_weights as _path_weights_ops
from robustkernels.ops import pgd_step as _pgd_step_ops
from robustkernels.ops.arguments import (
    LOADED,
    TYPE_ERRORS,
    check_arguments,
    conv_padding,
    int_pair,
    seed_arguments,
    seed_pair,
)
from robustkernels.ops.catalog import PUBLIC_OPS
from robustkernels.ops.multires_stack_checks import check_types as _multires_types
from robustkernels.ops.seed_tensor import seed_offset

__all__ = list(PUBLIC_OPS)


def noisy_weight(
    weight: torch.Tensor,
    alpha: torch.Tensor,
    *,
    lam: float,
    seed: int | torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """W' = mask * (weight + lam * alpha * std(weight) * eta(seed)), fused in one kernel.

    alpha holds one value, one per output channel or one per element; std(weight)
    is computed on the device (no host sync) and is a constant for autograd; eta is
    the library's Philox normal noise, regenerated in backward rather than stored.
    seed is an int or a 0-dim int64 CPU tensor holding it.
    """
    try:
        seed_value, seed_tensor = seed_pair(lam, seed)
        if LOADED:  # the op's C++ checks name the argument
            return _noisy_weight_ops.noisy_weight(weight, alpha, lam, seed_value, mask, seed_tensor)[0]
        validation.alpha_mode(weight, alpha, mask, "noisy_weight")
        return reference.noisy_weight(weight, alpha, float(lam), seed_value + seed_offset(seed_tensor), mask)
    except TYPE_ERRORS:
        check_arguments("noisy_weight", lam, seed, weight=weight, alpha=alpha, mask=mask)
        raise


def noisy_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    alpha: torch.Tensor,
    *,
    lam: float,
    seed: int | torch.Tensor,
    mask: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """conv2d(x, noisy_weight(weight, alpha, lam, seed, mask)) saving no weight copy or noise for backward."""
    try:
        if LOADED and padding.__class__ is not str and x.dim() == 4:  # the common call: parsed once, in C++
            seed_value, seed_tensor = seed_pair(lam, seed)
            return direct_calls.noisy_conv2d(
                x, weight, bias, alpha, lam, seed_value, mask, int_pair(stride), int_pair(padding),
                int_pair(dilation), groups, seed_tensor,
            )  # fmt: skip
        return _noisy_conv2d(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups)
    except TYPE_ERRORS:
        check_arguments("noisy_conv2d", lam, seed, x=x, weight=weight, bias=bias, alpha=alpha, mask=mask)
        raise


def _noisy_conv2d(x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups):
    seed, seed_tensor = seed_pair(lam, seed)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    stride, dilation = int_pair(stride), int_pair(dilation)
    x, padding = conv_padding("noisy_conv2d", x, weight, padding, stride, dilation)
    if LOADED:  # the op's C++ checks name the argument
        y = direct_calls.noisy_conv2d(
            x, weight, bias, alpha, lam, seed, mask, stride, padding, dilation, groups, seed_tensor
        )
    else:
        noisy_layers.check_conv_args(x, weight, bias, alpha, mask, groups)
        y = reference.noisy_conv2d(
            x, weight, bias, alpha, float(lam), seed + seed_offset(seed_tensor), mask, stride, padding,
            dilation, groups,
        )  # fmt: skip
    return y.squeeze(0) if unbatched else y


def noisy_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    alpha: torch.Tensor,
    *,
    lam: float,
    seed: int | torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """linear(x, noisy_weight(weight, alpha, lam, seed, mask)) saving no weight copy or noise for backward."""
    try:
        seed_value, seed_tensor = seed_pair(lam, seed)
        if LOADED:  # the op's C++ checks name the argument
            return direct_calls.noisy_linear(x, weight, bias, alpha, lam, seed_value, mask, seed_tensor)
        noisy_layers.check_linear_args(x, weight, bias, alpha, mask)
        return reference.noisy_linear(
            x, weight, bias, alpha, float(lam), seed_value + seed_offset(seed_tensor), mask
        )
    except TYPE_ERRORS:
        check_arguments("noisy_linear", lam, seed, x=x, weight=weight, bias=bias, alpha=alpha, mask=mask)
        raise


def philox_normal(like: torch.Tensor, *, seed: int, offset: int = 0) -> torch.Tensor:
    """The library's N(0, 1) noise for (seed, element offset), shaped like `like` (float32).

    The same seed gives the same tensor on every backend (C++, CUDA, Triton, reference).
    """
    return _noisy_weight_ops.philox_normal(like, seed, offset)


def crossmax(
    logits: torch.Tensor, *, k: int = 3, reduction: str = "kth", predictor_dim: int = 0
) -> torch.Tensor:
    """CrossMax of the multi-resolution self-ensemble (Fort & Lakshminarayanan), fused in one pass.

    logits are [N, B, C] with the N predictors (e.g. intermediate-layer heads) on
    `predictor_dim`. Z = logits - max over classes, then Z = Z - max over predictors;
    the result [B, C] is, per class, over predictors:

    - "kth": the k-th highest value of Z (the public notebook's `topk(3)[2]` for k=3);
    - "topk_mean": the mean of the k highest values;
    - "median": the lower median (for even N the smaller of the two middle values,
      torch.median's convention; k is not used).

    1 <= k <= N. The backward routes the gradient to the selected elements through both
    max subtractions; ties (in either max or in the selection) go to the lowest index,
    i.e. the order is "higher value first, then lower predictor index".
    """
    validation.check_tensor("logits", logits, "crossmax")
    _crossmax_ops.check_types(k, reduction, predictor_dim)  # the op's C++ checks the values
    if predictor_dim != 0:
        validation.check_predictor_dim(predictor_dim, logits, "crossmax")
        logits = logits.movedim(predictor_dim, 0)
    if not _extension.is_loaded():
        validation.crossmax_args(logits, k, reduction, "crossmax")
        return reference.crossmax(logits, k, reduction)
    return _crossmax_ops.crossmax(logits, k, reduction)[0]


def multires_stack(
    x: torch.Tensor,
    resolutions=(32, 16, 8, 4),
    *,
    jitter: int = 3,
    noise: float = 0.2,
    noise_kind: str = "uniform",
    contrast: tuple[float, float] = (0.5, 1.0),
    interpolation: str = "bicubic",
    antialias: bool = False,
    adjust_contrast: bool = True,
    seed: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """The multi-resolution input stack of the multi-resolution self-ensemble (Fort &
    Lakshminarayanan), fused: x [B, C, H, W] in [0, 1] -> [B, C * R, H, W].

    For each resolution r (an int for r x r, or an (rh, rw) pair) every image gets,
    independently, as the public notebook does, with one c ~ U[contrast]: (with
    adjust_contrast) torchvision's adjust_contrast by c, clamp(c * img + (1 - c) * m, 0, 1)
    with m the image's mean grey level; a colour mix c * img + (1 - c) * mean over
    channels(img); a circular shift by integers in [-jitter, jitter] in each direction; a
    resize down to r x r (F.interpolate(align_corners=False), antialiased only with
    antialias=True; the notebook has none), plus noise, a resize back to H x W, plus noise;
    and a clip to [0, 1]. adjust_contrast=False, antialias=True gives the library's earlier
    recipe. Noise is noise * U[0, 1) ("uniform", the
    public recipe's positive-mean noise) or noise * N(0, 1) ("gaussian"). Views at full
    size skip the two resizes. Views are stacked on channels, the first resolution's first.

    All randomness comes from the library's Philox generator keyed by `seed`, an int or a
    0-dim int64 CPU tensor holding it (drawn from torch's default generator when None): a call
    is repeatable given its seed, and every backend gives the same result for it. The backward
    is exact: it passes the gradient where the clip did not clip and regenerates the per-image
    contrast and shifts from the seed and adjust_contrast's clamp from x (the noise does not
    enter the gradient). Under torch.compile(fullgraph=True), pass a seed; a seed tensor can
    change on every call without a recompile (drawing one reads a value to Python).
    """
    switches = (antialias, adjust_contrast)
    heights, widths = _multires_types(
        x, resolutions, jitter, noise, noise_kind, contrast, interpolation, switches, seed
    )  # the op's C++ checks the values
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    seed, seed_tensor = seed_arguments(seed, "multires_stack", x.device)
    low, high = float(contrast[0]), float(contrast[1])
    args = (x, heights, widths, jitter, float(noise), noise_kind, low, high, interpolation, *switches)
    if not _extension.is_loaded():
        return _multires_ops.reference_stack(*args, seed + seed_offset(seed_tensor))
    return _multires_ops.multires_stack(*args, seed, seed_tensor)[0]


def pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    *,
    step: float | torch.Tensor,
    eps: float,
    norm: str = "linf",
    lo: float = 0.0,
    hi: float = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    """One projected-gradient attack step, fused in one pass (L∞) or three (L2); returns the new x_adv.

    - "linf": x_adv + step * sign(grad), clamped to [x_orig - eps, x_orig + eps];
    - "l2": x_adv + step * grad / ||grad||, then the displacement from x_orig is scaled
      onto the eps ball where it is longer than eps;

    then clamped to [lo, hi]. Norms are per sample (all dimensions but the first);
    a zero gradient makes no step. `step` is one number or a [B] tensor (one step size
    per sample, as APGD keeps). normalize=False steps by step * grad as given (no sign,
    no normalisation), e.g. to project APGD's momentum combination. Attacks call it on
    detached tensors; it is differentiable all the same (see robustkernels.ops.pgd_step).
    """
    validation.pgd_step_args(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize, "pgd_step")
    if not isinstance(step, torch.Tensor):
        step = torch.full((x_adv.shape[0],), float(step), dtype=x_adv.dtype, device=x_adv.device)
    if not _extension.is_loaded():
        return reference.pgd_step(
            x_adv, grad, x_orig, step, float(eps), norm, float(lo), float(hi), normalize
        )
    return _pgd_step_ops.pgd_step(
        x_adv, grad, x_orig, step, float(eps), norm, float(lo), float(hi), normalize
    )


def path_conv2d(
    x: torch.Tensor,
    weight_bank: torch.Tensor,
    route,
    *,
    bias_bank: torch.Tensor | None = None,
    mask_bank: torch.Tensor | None = None,
    noise: tuple | None = None,
    num_paths: int | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Routed multi-path convolution: y[b] = conv(x[b], W'_{route[b]}) + bias_{route[b]}.

    weight_bank is [P, C_out, C_in/groups, kh, kw], or one [C_out, C_in/groups, kh, kw] weight
    shared by every path (paths then differ by masks and noise); bias_bank [P, C_out] or [C_out];
    mask_bank [P, ...] bool; noise = (alpha, lam, seed) gives path p the weight
    W + lam_p * alpha_p * std(W) * eta(seed_p) (the foundation's transform; lam_p = 0 paths pay
    nothing for it). route is an int32/int64 tensor [B] of paths, an int p (the whole batch on
    path p), "split" (P equal contiguous segments: FLOAT's clean/adversarial halves, an ensemble's
    stacked copies) or a list of segment sizes per path; all but the tensor need no sort.
    route="stacked" is the ensemble layout: x carries path p's input in channel block p
    ([B, P * C_in, H, W]) and y path p's output in block p, from one grouped convolution.
    Samples are grouped by path on the device; paths with no samples cost nothing and get
    exactly zero gradients.
    """
    op = "path_conv2d"
    try:
        plain = _path_calls.plain_call(5, x, weight_bank, route, bias_bank, noise, num_paths, op)
        if plain is not None and padding.__class__ is not str:  # parsed once, in C++
            lams, seeds, route_tensor, segments, bias = plain
            return direct_calls.path_conv2d(
                x, weight_bank, bias, mask_bank, None, lams, seeds, route_tensor, segments, int_pair(stride),
                int_pair(padding), int_pair(dilation), groups, None,
            )  # fmt: skip
        paths, weight, bias, noise_arguments = _path_calls.bank_arguments(
            op, 5, weight_bank, route, bias_bank, mask_bank, noise, num_paths
        )
        stride, dilation = int_pair(stride), int_pair(dilation)
        if isinstance(route, str) and route == "stacked":
            effective, bias = _path_calls.stacked_weights(
                x, weight, bias, mask_bank, noise_arguments, paths, op, weight.shape[2] * groups
            )
            x, padding = conv_padding(op, x, effective, padding, stride, dilation)
            return F.conv2d(x, effective, bias, stride, padding, dilation, groups * paths)
        route_tensor, segments = _path_calls.route_arguments(route, x, paths, op)
        x, padding = conv_padding(op, x, weight, padding, stride, dilation)
        return _path_calls.routed_layer(
            op,
            x,
            weight,
            bias,
            mask_bank,
            noise_arguments,
            route_tensor,
            segments,
            (stride, padding, dilation, groups),
        )
    except TYPE_ERRORS:
        _path_calls.check_types(op, x=x, weight_bank=weight_bank, bias_bank=bias_bank, mask_bank=mask_bank)
        raise


def path_linear(
    x: torch.Tensor,
    weight_bank: torch.Tensor,
    route,
    *,
    bias_bank: torch.Tensor | None = None,
    mask_bank: torch.Tensor | None = None,
    noise: tuple | None = None,
    num_paths: int | None = None,
) -> torch.Tensor:
    """Routed multi-path linear layer (classifier heads): y[b] = linear(x[b], W'_{route[b]}) + bias_{route[b]}.

    weight_bank [P, out, in] or one shared [out, in]; x [B, ..., in] is routed over its first
    dimension. Every other argument as in path_conv2d.
    """
    op = "path_linear"
    try:
        plain = _path_calls.plain_call(3, x, weight_bank, route, bias_bank, noise, num_paths, op)
        if plain is not None:  # parsed once, in C++
            lams, seeds, route_tensor, segments, bias = plain
            return direct_calls.path_linear(
                x, weight_bank, bias, mask_bank, None, lams, seeds, route_tensor, segments, None
            )
        paths, weight, bias, noise_arguments = _path_calls.bank_arguments(
            op, 3, weight_bank, route, bias_bank, mask_bank, noise, num_paths
        )
        if isinstance(route, str) and route == "stacked":
            effective, bias = _path_calls.stacked_weights(
                x, weight, bias, mask_bank, noise_arguments, paths, op, weight.shape[2]
            )
            stacked = x.reshape(*x.shape[:-1], paths, -1)
            y = torch.einsum("...pi,poi->...po", stacked, effective.reshape(paths, -1, stacked.shape[-1]))
            y = y.flatten(-2)
            return y if bias is None else y + bias
        route_tensor, segments = _path_calls.route_arguments(route, x, paths, op)
        return _path_calls.routed_layer(
            op, x, weight, bias, mask_bank, noise_arguments, route_tensor, segments
        )
    except TYPE_ERRORS:
        _path_calls.check_types(op, x=x, weight_bank=weight_bank, bias_bank=bias_bank, mask_bank=mask_bank)
        raise


def path_weights(
    weight_bank: torch.Tensor,
    *,
    shared_paths: int | None = None,
    mask_bank: torch.Tensor | None = None,
    noise: tuple | None = None,
) -> torch.Tensor:
    """Every path's effective weight [P, ...] in one launch (mask and per-path noise as in path_conv2d).

    weight_bank is a bank [P, ...], or with shared_paths=P one weight shared by P paths.
    """
    op = "path_weights"
    validation.check_tensor("weight_bank", weight_bank, op)
    weight = weight_bank if shared_paths is None else weight_bank.unsqueeze(0)
    paths = weight.shape[0] if shared_paths is None else shared_paths
    return _path_calls.every_path_weight(weight, mask_bank, *_path_calls.path_noise(noise, paths, op))


def route_sort(route: torch.Tensor, num_paths: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable counting sort of a route [B] on its device: (counts [P] int64, perm [B] int64),
    perm listing the samples of path 0, then path 1, ..., each in batch order."""
    validation.check_tensor("route", route, "route_sort")
    if _extension.is_loaded():  # the op's C++ checks name the argument
        counts, perm = _path_weights_ops.route_sort(route, num_paths)
    else:
        validation.check_route(route, num_paths, "route_sort")
        counts, perm = _path_weights_ops.route_sort_reference(route, num_paths)
    if int(counts.sum()) != route.shape[0]:
        raise ValueError(f"robustkernels.route_sort: route values must lie in [0, {num_paths})")
    return counts, perm
