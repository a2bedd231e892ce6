"""A sparse FLOP counter: multiply-accumulates of the convolutions and linear layers that use a
non-zero weight (the count a sparse kernel would pay), for EED's speed-up over dense AT."""

import torch
from torch import nn

from .criteria import hooked_forward, prunable_layers
from .masks import masked_weights

__all__ = ["dense_flops", "sparse_flops", "team_flops"]


def _positions(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Output positions per sample of every prunable layer (1 for a linear layer) in a forward of x."""
    positions: dict[str, int] = {}

    def record(name):
        def hook(module, inputs, output):
            positions[name] = output[0, 0].numel() if output.dim() > 2 else 1

        return hook

    handles = [layer.register_forward_hook(record(name)) for name, layer in prunable_layers(model).items()]
    hooked_forward(model, x[:1], handles)
    return positions


@torch.no_grad()
def sparse_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per sample over the non-zero weights (masked weights excluded)."""
    positions = _positions(model, x)
    return sum(int(w.count_nonzero()) * positions[name] for name, w in masked_weights(model).items())


@torch.no_grad()
def dense_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per sample with every weight counted."""
    positions = _positions(model, x)
    return sum(layer.weight.numel() * positions[name] for name, layer in prunable_layers(model).items())


def team_flops(member_flops, members_used: torch.Tensor) -> float:
    """Mean over samples of the FLOPs of the members each ran (members in order: the first
    members_used[i] of them)."""
    cumulative = torch.tensor(member_flops, dtype=torch.float64).cumsum(0)
    return float(cumulative[members_used.cpu() - 1].mean())
