"""Public functions of robustkernels (the functional counterparts of robustkernels.nn)."""

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from robustkernels.ops import crossmax as _crossmax_ops
from robustkernels.ops import multires_stack as _multires_ops
from robustkernels.ops import noisy_layers, validation
from robustkernels.ops import noisy_weight as _noisy_weight_ops
from robustkernels.ops import pgd_step as _pgd_step_ops

__all__ = ["crossmax", "multires_stack", "noisy_conv2d", "noisy_linear", "noisy_weight", "pgd_step", "philox_normal"]


def _check_arguments(op: str, lam, seed, **tensors) -> None:
    """Type checks done before the op's schema would reject the call with a generic message."""
    validation.check_lam(lam, op)
    validation.check_seed(seed, op)
    for name, value in tensors.items():
        if value is not None or name in ("x", "weight", "alpha"):
            validation.check_tensor(name, value, op)


def noisy_weight(
    weight: torch.Tensor,
    alpha: torch.Tensor,
    *,
    lam: float,
    seed: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """W' = mask * (weight + lam * alpha * std(weight) * eta(seed)), fused in one kernel.

    alpha holds one value, one per output channel or one per element; std(weight)
    is computed on the device (no host sync) and is a constant for autograd; eta is
    the library's Philox normal noise, regenerated in backward rather than stored.
    """
    _check_arguments("noisy_weight", lam, seed, weight=weight, alpha=alpha, mask=mask)
    effective, _ = _noisy_weight_ops.noisy_weight(weight, alpha, float(lam), seed, mask)
    return effective


def _conv_padding(x: torch.Tensor, weight: torch.Tensor, padding, stride, dilation):
    """Explicit (x, padding) for int, pair or 'valid'/'same' padding, as nn.Conv2d accepts."""
    if not isinstance(padding, str):
        return x, list(_pair(padding))
    if padding == "valid":
        return x, [0, 0]
    if padding != "same":
        raise ValueError(
            f"robustkernels.noisy_conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    if any(s != 1 for s in stride):
        raise ValueError(
            "robustkernels.noisy_conv2d: padding='same' needs stride 1, as in torch.nn.functional.conv2d"
        )
    totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:], strict=True)]
    if all(t % 2 == 0 for t in totals):
        return x, [t // 2 for t in totals]
    # Odd total padding: pad the extra row / column on the right, as F.conv2d does.
    pad = []
    for total in reversed(totals):
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad), [0, 0]


def noisy_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    alpha: torch.Tensor,
    *,
    lam: float,
    seed: int,
    mask: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """conv2d(x, noisy_weight(weight, alpha, lam, seed, mask)) saving no weight copy or noise for backward."""
    _check_arguments("noisy_conv2d", lam, seed, x=x, weight=weight, bias=bias, alpha=alpha, mask=mask)
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    stride, dilation = list(_pair(stride)), list(_pair(dilation))
    x, padding = _conv_padding(x, weight, padding, stride, dilation)
    y = noisy_layers.noisy_conv2d(
        x, weight, bias, alpha, float(lam), seed, mask, stride, padding, dilation, groups
    )
    return y.squeeze(0) if unbatched else y


def noisy_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    alpha: torch.Tensor,
    *,
    lam: float,
    seed: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """linear(x, noisy_weight(weight, alpha, lam, seed, mask)) saving no weight copy or noise for backward."""
    _check_arguments("noisy_linear", lam, seed, x=x, weight=weight, bias=bias, alpha=alpha, mask=mask)
    return noisy_layers.noisy_linear(x, weight, bias, alpha, float(lam), seed, mask)


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
    validation.check_predictor_dim(predictor_dim, logits, "crossmax")
    logits = logits.movedim(predictor_dim, 0)
    validation.crossmax_args(logits, k, reduction, "crossmax")  # before the op's schema rejects a bad k
    out, _, _, _ = _crossmax_ops.crossmax(logits, k, reduction)
    return out


def multires_stack(
    x: torch.Tensor,
    resolutions=(32, 16, 8, 4),
    *,
    jitter: int = 3,
    noise: float = 0.2,
    noise_kind: str = "uniform",
    contrast: tuple[float, float] = (0.5, 1.0),
    interpolation: str = "bicubic",
    seed: int | None = None,
) -> torch.Tensor:
    """The multi-resolution input stack of the multi-resolution self-ensemble (Fort &
    Lakshminarayanan), fused: x [B, C, H, W] in [0, 1] -> [B, C * R, H, W].

    For each resolution r (an int for r x r, or an (rh, rw) pair) every image gets,
    independently: a contrast / colour mix c * img + (1 - c) * mean over channels(img)
    with c ~ U[contrast]; a circular shift by integers in [-jitter, jitter] in each
    direction; a resize down to r x r (antialiased for bilinear / bicubic, as
    F.interpolate(align_corners=False, antialias=True)), plus noise, a resize back to
    H x W, plus noise; and a clip to [0, 1]. Noise is noise * U[0, 1) ("uniform", the
    public recipe's positive-mean noise) or noise * N(0, 1) ("gaussian"). Views at full
    size skip the two resizes. Views are stacked on channels, the first resolution's first.

    All randomness comes from the library's Philox generator keyed by `seed` (drawn
    from torch's default generator when None): a call is repeatable given its seed, and
    every backend gives the same result for it. The backward is exact: it passes the
    gradient where the clip did not clip and regenerates the per-image contrast and
    shifts from the seed (the noise does not enter the gradient). Under
    torch.compile(fullgraph=True), pass a seed (drawing one reads a value to Python).
    """
    op = "multires_stack"
    sizes = validation.multires_sizes(x, resolutions, op)
    validation.multires_options(jitter, noise, noise_kind, contrast, interpolation, op)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    validation.check_seed(seed, op)
    heights, widths = [s[0] for s in sizes], [s[1] for s in sizes]
    out, _ = _multires_ops.multires_stack(
        x,
        heights,
        widths,
        jitter,
        float(noise),
        noise_kind,
        float(contrast[0]),
        float(contrast[1]),
        interpolation,
        seed,
    )
    return out
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
    return _pgd_step_ops.pgd_step(
        x_adv, grad, x_orig, step, float(eps), norm, float(lo), float(hi), normalize
    )
