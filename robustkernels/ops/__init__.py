"""Autograd-aware custom ops (torch.ops.robustkernels.*) and their backend dispatch."""

from robustkernels.ops import crossmax, noisy_layers, noisy_weight, path_conv, path_layers
from robustkernels.ops.backend import BACKENDS, select, unavailable_reason, use_backend

__all__ = [
    "BACKENDS",
    "crossmax",
    "noisy_layers",
    "noisy_weight",
    "path_conv",
    "path_layers",
    "select",
    "unavailable_reason",
    "use_backend",
]
