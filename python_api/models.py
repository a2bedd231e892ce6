"""Models for the method layer.

The models take inputs in [0, 1] and normalise them inside (a `Normalize` module), so
attacks can work in pixel space with a [0, 1] box. They use plain nn.Conv2d / nn.Linear,
so `robustkernels.nn.convert(model)` can swap them for the noisy layers.
"""

from collections.abc import Sequence

import torch
from torch import nn

from .data import DIGITS_MEAN, DIGITS_STD, NUM_CLASSES

__all__ = ["Normalize", "SmallCNN"]


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std stored as buffers."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], num_channels: int = 3):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 1:
            mean_t = mean_t.expand(num_channels)
        if std_t.numel() == 1:
            std_t = std_t.expand(num_channels)
        if mean_t.numel() != num_channels or std_t.numel() != num_channels:
            raise ValueError(
                f"mean and std need 1 or {num_channels} values, got {mean_t.numel()} and {std_t.numel()}"
            )
        if bool((std_t <= 0).any()):
            raise ValueError("std must be positive")
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small, fast CNN for 32x32 inputs (the digits data).

    normalize -> [conv-BN-ReLU, maxpool] x2 -> conv-BN-ReLU -> global average pool -> linear,
    with width, 2*width and 4*width channels. The first conv is `FIRST_CONV`
    ("block1.0"), the layer FLOAT leaves noise-free:
    `robustkernels.nn.convert(model, skip=(SmallCNN.FIRST_CONV,))`.
    """

    FIRST_CONV = "block1.0"

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        in_channels: int = 3,
        width: int = 16,
        mean: float | Sequence[float] = DIGITS_MEAN,
        std: float | Sequence[float] = DIGITS_STD,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std, num_channels=in_channels)
        self.block1 = _conv_bn_relu(in_channels, width)
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = _conv_bn_relu(width, 2 * width)
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = _conv_bn_relu(2 * width, 4 * width)
        self.pool3 = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.pool3(self.block3(x))
        return self.fc(torch.flatten(x, 1))
