"""Tricks that make adversarial examples transfer to other models.

- Input diversity (DI, Xie et al., 2019): with probability p per gradient draw, the
  batch is resized to a random size in [H, scale*H) and zero-padded at a random
  offset to scale*H, then resized back to H (so models with a fixed input size accept
  it). With momentum it gives M-DI²-FGSM: `pgd(..., momentum=1.0, input_diversity=0.5)`.
- The skip gradient method (SGM, Wu et al., 2020): in residual networks, gradients
  through the residual branches are scaled by gamma < 1, so more of the gradient
  flows through the skip connections.
"""

import contextlib
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def input_diversity(
    x: torch.Tensor, probability: float = 0.5, scale: float = 1.1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One DI draw for a batch x [B, C, H, W] (the transform is differentiable in x)."""
    if torch.rand((), generator=generator, device=x.device).item() >= probability:
        return x
    height, width = x.shape[-2:]
    padded_h, padded_w = int(height * scale), int(width * scale)
    size_h = int(torch.randint(height, max(padded_h, height + 1), (), generator=generator, device=x.device))
    size_w = round(size_h * width / height)
    resized = F.interpolate(x, size=(size_h, min(size_w, padded_w)), mode="nearest")
    top = int(torch.randint(0, padded_h - size_h + 1, (), generator=generator, device=x.device))
    left = int(torch.randint(0, padded_w - resized.shape[-1] + 1, (), generator=generator, device=x.device))
    padded = F.pad(resized, (left, padded_w - resized.shape[-1] - left, top, padded_h - size_h - top))
    return F.interpolate(padded, size=(height, width), mode="nearest")


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma):
        ctx.gamma = gamma
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.gamma, None


def residual_relus(model: nn.Module) -> list[str]:
    """SGM's default choice: every ReLU inside a sub-module (name with a dot), i.e. not
    the stem's top-level activation."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.ReLU) and "." in name]


@contextlib.contextmanager
def skip_gradient(model: nn.Module, gamma: float = 0.5, modules: Iterable[str] | None = None):
    """Within the block, the gradient through each named module's output (default:
    `residual_relus(model)`) is scaled by gamma on every call; the forward is
    unchanged. torchvision's BasicBlock calls its one ReLU twice, so gamma**0.5 there
    gives the paper's per-block decay. Hooks are removed on exit."""
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    names = residual_relus(model) if modules is None else list(modules)
    by_name = dict(model.named_modules())
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ValueError(f"skip_gradient: no modules named {missing}")
    handles = [
        by_name[name].register_forward_hook(lambda _m, _i, out: _ScaleGradient.apply(out, gamma))
        for name in names
    ]
    try:
        yield names
    finally:
        for handle in handles:
            handle.remove()
