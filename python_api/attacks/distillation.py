"""DVERGE's feature distillation (Yang et al., "DVERGE: Diversifying Vulnerabilities
for Enhancing Robust Generation of Ensembles", NeurIPS 2020): x' within eps (L∞) of
a source image x_s whose layer-l features match those of a target image x_t, found by
signed descent on the features' mean squared error with momentum on L1-normalised
gradients (DVERGE's published settings: eps 0.07, 10 steps of eps / 10, no random
start). The L1 normalisation is per sample, so one sample's gradient scale does not
weigh on another's momentum. Every step is one `robustkernels.functional.pgd_step`."""

from collections.abc import Callable

import torch

from robustkernels.functional import pgd_step

from .arguments import check_count, check_nonnegative
from .pgd import l1_normalised
from .start import uniform_in_ball


def feature_mse(features: torch.Tensor, target_features: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error between feature maps [B, ...]."""
    return (features - target_features).square().flatten(1).mean(dim=1)


def feature_distillation(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    x_source: torch.Tensor,
    x_target: torch.Tensor,
    *,
    eps: float = 0.07,
    steps: int = 10,
    step: float | None = None,
    momentum: float = 1.0,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """x' in the eps ball around x_source (and [lo, hi]) with feature_fn(x') close to
    feature_fn(x_target). step defaults to eps / 10; momentum 0 is plain signed descent.
    feature_fn's parameters get no gradient (only x' is differentiated)."""
    if not isinstance(x_source, torch.Tensor) or not isinstance(x_target, torch.Tensor):
        raise TypeError("x_source and x_target must be tensors")
    if x_source.shape != x_target.shape:
        raise ValueError(
            f"x_target must have x_source's shape {tuple(x_source.shape)}, got {tuple(x_target.shape)}"
        )
    check_nonnegative("eps", eps)
    check_nonnegative("momentum", momentum)
    check_count("steps", steps)
    step = eps / 10 if step is None else step
    check_nonnegative("step", step)
    x_source = x_source.detach()
    with torch.no_grad():
        target_features = feature_fn(x_target.detach())
    x = uniform_in_ball(x_source, eps, "linf", generator, lo, hi) if random_start else x_source.clone()
    velocity = torch.zeros_like(x)
    for _ in range(steps):
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(feature_mse(feature_fn(x_in), target_features).sum(), x_in)
        velocity = momentum * velocity + l1_normalised(grad)
        # descent on the distance: step against the accumulated gradient
        x = pgd_step(x, -velocity, x_source, step=step, eps=eps, norm="linf", lo=lo, hi=hi)
    return x
