"""A randomised model's deterministic twin: the same weights, routes and batch norms with its
randomness off (every noisy weight's lam 0, every random route fixed to path 0). Examples crafted
on the twin and transferred to the model beat a white-box attack on it when the randomness
masks the model's gradients (Athalye et al., 2018)."""

import copy

from torch import nn

from robustkernels.nn import MaskedExpertConv2d, NoisyConv2d, NoisyLinear

__all__ = ["deterministic_twin"]


def deterministic_twin(model) -> nn.Module | None:
    """A copy of `model` with its noise off and its random routes fixed, or None when the model
    has neither (no twin can be derived from it; pass one explicitly)."""
    if not isinstance(model, nn.Module):
        return None
    twin = copy.deepcopy(model)
    changed = False
    for module in twin.modules():
        if isinstance(module, (NoisyConv2d, NoisyLinear, MaskedExpertConv2d)) and module.lam != 0:
            module.lam, changed = 0.0, True
        if isinstance(getattr(module, "route", None), str) and module.route == "random":
            module.route, changed = 0, True
    return twin if changed else None
