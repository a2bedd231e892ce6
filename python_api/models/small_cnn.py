"""SmallCNN: the small, fast CNN for the embedded digits data."""

from collections.abc import Sequence

import torch
from torch import nn

from ..data.digits import DIGITS_MEAN, DIGITS_STD, NUM_CLASSES
from .normalize import Normalize

__all__ = ["SmallCNN"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
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
