"""A backbone on the multi-resolution input stack of "Ensemble everything everywhere" (Fort &
Lakshminarayanan): `to_multires_model(model, resolutions)` widens the model's stem to take the
C * R channels of robustkernels.nn.MultiResStack and puts the stack in front, so every forward
(training, evaluation, each attack step) draws fresh views from the library's seed chain."""

from collections.abc import Sequence

import torch
from torch import nn

from robustkernels.nn import MultiResStack

from .normalize import Normalize

__all__ = ["MultiResModel", "to_multires_model"]


class MultiResModel(nn.Module):
    """x [B, C, H, W] in [0, 1] -> net(stack(x)): `stack` a MultiResStack, `net` the backbone
    whose stem takes C * len(resolutions) channels."""

    def __init__(self, net: nn.Module, stack: MultiResStack):
        super().__init__()
        self.stack = stack
        self.net = net

    def forward(self, x: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        return self.net(self.stack(x, seed))


def _stem(model: nn.Module, name: str | None) -> tuple[str, nn.Conv2d]:
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if name is not None:
        convs = [(n, m) for n, m in convs if n == name]
    if not convs:
        raise ValueError(
            f"to_multires_model: {type(model).__name__} has no Conv2d" + (f" named {name!r}" if name else "")
        )
    return convs[0]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def to_multires_model(
    model: nn.Module, resolutions: Sequence = (32, 16, 8, 4), *, stem: str | None = None, **stack_options
) -> MultiResModel:
    """`model` (changed in place) behind a MultiResStack(resolutions, **stack_options).

    The stem, the first Conv2d (or the one named `stem`), is replaced by a freshly initialised
    Conv2d with C * R input channels and otherwise the same settings, as the notebook does
    for ResNet-152's conv1; an input Normalize over C channels (the library's models) gets its
    mean and std repeated per view, as the notebook repeats the ImageNet statistics."""
    name, conv = _stem(model, stem)
    views = len(resolutions)
    channels = conv.in_channels
    if conv.groups != 1:
        raise ValueError(f"to_multires_model: the stem {name!r} is a grouped convolution")
    wide = nn.Conv2d(
        channels * views, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
    )  # fmt: skip
    _replace(model, name, wide.to(device=conv.weight.device, dtype=conv.weight.dtype))
    for norm_name, norm in list(model.named_modules()):
        if isinstance(norm, Normalize) and norm.mean.numel() == channels:
            tiled = Normalize(
                norm.mean.flatten().repeat(views), norm.std.flatten().repeat(views), channels * views
            )
            _replace(model, norm_name, tiled.to(norm.mean.device))
    return MultiResModel(model, MultiResStack(resolutions, **stack_options))
