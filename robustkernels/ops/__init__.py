"""Autograd-aware custom ops (torch.ops.robustkernels.*) and their backend dispatch."""

from robustkernels.ops import crossmax, noisy_layers, noisy_weight, path_conv, path_weights, pgd_step
from robustkernels.ops.backend import BACKENDS, select, unavailable_reason, use_backend

__all__ = [
    "BACKENDS",
    "crossmax",
    "noisy_layers",
    "noisy_weight",
    "path_conv",
    "path_weights",
    "pgd_step",
    "select",
    "unavailable_reason",
    "use_backend",
]
