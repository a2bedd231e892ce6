"""Pure-PyTorch references: the oracles of the tests and the baselines of the benchmarks."""

from robustkernels.reference.crossmax import crossmax
from robustkernels.reference.multires_stack import multires_stack
from robustkernels.reference.noisy_weight import (
    alpha_for_weight,
    noisy_conv2d,
    noisy_linear,
    noisy_weight,
    pni_noisy_conv2d,
    pni_noisy_weight,
)
from robustkernels.reference.path_conv import path_conv2d, path_linear, path_weights
from robustkernels.reference.pgd_step import pgd_step
from robustkernels.reference.philox import philox_normal

__all__ = [
    "alpha_for_weight",
    "crossmax",
    "multires_stack",
    "noisy_conv2d",
    "noisy_linear",
    "noisy_weight",
    "path_conv2d",
    "path_linear",
    "path_weights",
    "pgd_step",
    "philox_normal",
    "pni_noisy_conv2d",
    "pni_noisy_weight",
]
