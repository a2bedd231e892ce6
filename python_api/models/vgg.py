"""VGG-16 with BatchNorm for CIFAR-sized inputs (a single linear classifier on the pooled features)."""

from collections.abc import Sequence

import torch
from torch import nn

from .normalize import Normalize

__all__ = ["VGG", "vgg16_bn"]

# Output channels of each 3x3 convolution; "M" is a 2x2 max-pool.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """normalize -> features (conv3x3-BN-ReLU and max-pools per `config`) -> global average pool -> fc.

    On 32x32 inputs the five pools leave 1x1 maps, so the average pool only flattens;
    larger inputs (STL-10, Tiny-ImageNet) are averaged.
    """

    def __init__(
        self,
        config: Sequence[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std, num_channels=in_channels)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(channels, int(item), 3, padding=1, bias=False),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(),
                ]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(self.normalize(x))), 1))


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, **normalization) -> VGG:
    """VGG-16 with BatchNorm: 13 convolutions in 5 blocks, 64 to 512 channels."""
    return VGG(_VGG16, num_classes, in_channels, **normalization)
