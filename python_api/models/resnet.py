"""ResNets for CIFAR-sized inputs: ResNet-20 (3 stages, He et al. 2016) and ResNet-18/34
with the CIFAR stem (a 3x3 stride-1 convolution, no max-pool).

Shortcuts that change shape are 1x1 convolutions with BatchNorm. No operation works in
place, so every tapped feature (see features.py) stays intact after the forward.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .normalize import Normalize

__all__ = ["BasicBlock", "ResNet", "resnet18", "resnet20", "resnet34"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """normalize -> conv3x3-BN-ReLU stem -> stages of BasicBlocks -> global average pool -> fc.

    Stage i has `blocks[i]` blocks of `widths[i]` channels; every stage after the first
    halves the resolution in its first block. Sub-modules: normalize, conv1, bn1,
    layer1..layerK (blocks "layer1.0", ...), pool, fc.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks and widths need the same non-zero length, got {blocks} and {widths}")
        self.normalize = Normalize(mean, std, num_channels=in_channels)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        channels = widths[0]
        for stage, (count, width) in enumerate(zip(blocks, widths, strict=True), start=1):
            layers = []
            for index in range(count):
                stride = 2 if stage > 1 and index == 0 else 1
                layers.append(BasicBlock(channels, width, stride))
                channels = width
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3, **normalization) -> ResNet:
    """ResNet-20: 3 stages of 3 blocks with 16, 32, 64 channels (0.27 M parameters for 10 classes)."""
    return ResNet((3, 3, 3), (16, 32, 64), num_classes, in_channels, **normalization)


def resnet18(num_classes: int = 10, in_channels: int = 3, **normalization) -> ResNet:
    """ResNet-18 with the CIFAR stem: 4 stages of 2 blocks with 64 to 512 channels."""
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, **normalization)


def resnet34(num_classes: int = 10, in_channels: int = 3, **normalization) -> ResNet:
    """ResNet-34 with the CIFAR stem: 4 stages of 3, 4, 6, 3 blocks with 64 to 512 channels."""
    return ResNet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels, **normalization)
