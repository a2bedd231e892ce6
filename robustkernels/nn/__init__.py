"""Drop-in modules built on robustkernels' ops."""

from robustkernels.nn.crossmax import CrossMax
from robustkernels.nn.multires import IntermediateHeads, MultiResStack
from robustkernels.nn.noisy import NoisyConv2d, NoisyLinear, convert, set_noise_scale

__all__ = [
    "CrossMax",
    "IntermediateHeads",
    "MultiResStack",
    "NoisyConv2d",
    "NoisyLinear",
    "convert",
    "set_noise_scale",
]
