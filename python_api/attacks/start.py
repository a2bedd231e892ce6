"""Random starting points inside the eps ball (and the [lo, hi] box)."""

import torch


def uniform_in_ball(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None, lo: float, hi: float
) -> torch.Tensor:
    """A point drawn uniformly from the eps ball around each sample, clamped to [lo, hi].
    L2: a uniform direction times eps * U^(1/d), uniform in the ball's volume."""
    if norm == "linf":
        delta = (2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device).flatten(1)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        dims = direction.shape[1]
        radius = eps * torch.rand(x.shape[0], 1, generator=generator, dtype=x.dtype, device=x.device) ** (
            1 / dims
        )
        delta = (direction * radius).reshape(x.shape)
    return (x + delta).clamp(lo, hi)


def on_sphere(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None, lo: float, hi: float
) -> torch.Tensor:
    """APGD's start: L∞, a uniform draw in the box rescaled so its largest coordinate is
    eps; L2, a Gaussian direction scaled to norm eps; clamped to [lo, hi]."""
    if norm == "linf":
        t = 2 * torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 1
        scale = t.flatten(1).abs().amax(dim=1)
    else:
        t = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        scale = t.flatten(1).norm(dim=1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return (x + eps * t / scale.clamp_min(1e-12).reshape(shape)).clamp(lo, hi)
