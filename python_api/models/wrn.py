"""Wide ResNets (Zagoruyko and Komodakis 2016): WRN-depth-k with pre-activation blocks."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .normalize import Normalize

__all__ = ["WideBasicBlock", "WideResNet", "wrn16_8", "wrn40_2"]


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut (a 1x1 conv of the activated input
    when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """normalize -> conv3x3 (16 channels) -> 3 stages of (depth - 4) / 6 blocks with 16k, 32k, 64k
    channels -> BN-ReLU -> global average pool -> fc. Sub-modules: normalize, conv1,
    layer1..layer3, bn, pool, fc."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
        blocks = (depth - 4) // 6
        self.normalize = Normalize(mean, std, num_channels=in_channels)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        for stage, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), start=1):
            layers = []
            for index in range(blocks):
                layers.append(WideBasicBlock(channels, width, 2 if stage > 1 and index == 0 else 1))
                channels = width
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(self.normalize(x)))))
        return self.fc(torch.flatten(self.pool(F.relu(self.bn(x))), 1))


def wrn16_8(num_classes: int = 10, in_channels: int = 3, **normalization) -> WideResNet:
    """WRN-16-8: 2 blocks per stage, 128 to 512 channels."""
    return WideResNet(16, 8, num_classes, in_channels, **normalization)


def wrn40_2(num_classes: int = 10, in_channels: int = 3, **normalization) -> WideResNet:
    """WRN-40-2: 6 blocks per stage, 32 to 128 channels."""
    return WideResNet(40, 2, num_classes, in_channels, **normalization)
