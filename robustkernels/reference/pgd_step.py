"""Reference of one projected-gradient attack step: the eager sequence attack code writes.

    linf: u = x_adv + step * sign(grad);           x = clamp(u, x_orig - eps, x_orig + eps)
    l2:   u = x_adv + step * grad / ||grad||;      x = x_orig + (u - x_orig) * min(1, eps / ||u - x_orig||)
    then  x = clamp(x, lo, hi)

Norms are per sample (over every dimension but the first). `step` is one value or one
per sample ([B]). normalize=False uses grad as it is (u = x_adv + step * grad), which is
how APGD's momentum combination is projected. A zero norm counts as NORM_FLOOR, so a
zero gradient makes no step and a zero displacement stays zero.
"""

import torch

NORMS = ("linf", "l2")
NORM_FLOOR = 1e-12


def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """||t_b||_2 over all but the first dimension, shaped [B, 1, ...] to broadcast against t."""
    return t.flatten(1).norm(dim=1).reshape(-1, *([1] * (t.dim() - 1)))


def per_sample(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A per-sample [B] tensor reshaped to broadcast against `like`; a number as it is."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1, *([1] * (like.dim() - 1)))
    return value


def pgd_step(
    x_adv: torch.Tensor,
    grad: torch.Tensor,
    x_orig: torch.Tensor,
    step: float | torch.Tensor,
    eps: float,
    norm: str = "linf",
    lo: float = 0.0,
    hi: float = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if x_adv.dim() == 1:  # one value per sample
        x_adv, grad, x_orig = x_adv.unsqueeze(1), grad.unsqueeze(1), x_orig.unsqueeze(1)
        return pgd_step(x_adv, grad, x_orig, step, eps, norm, lo, hi, normalize).squeeze(1)
    if not normalize:
        direction = grad
    elif norm == "linf":
        direction = grad.sign()
    else:
        direction = grad / per_sample_norm(grad).clamp_min(NORM_FLOOR)
    moved = x_adv + per_sample(step, x_adv) * direction
    if norm == "linf":
        projected = torch.clamp(moved, x_orig - eps, x_orig + eps)
    else:
        delta = moved - x_orig
        projected = x_orig + delta * (eps / per_sample_norm(delta).clamp_min(NORM_FLOOR)).clamp_max(1.0)
    return projected.clamp(lo, hi)
