"""Architectures by name, as the trainer and the CLI build them."""

from collections.abc import Callable, Sequence

from torch import nn

from .resnet import resnet18, resnet20, resnet34
from .small_cnn import SmallCNN
from .vgg import vgg16_bn
from .wrn import wrn16_8, wrn40_2

__all__ = ["MODELS", "build_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {
    "small-cnn": SmallCNN,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "vgg16-bn": vgg16_bn,
    "wrn-16-8": wrn16_8,
    "wrn-40-2": wrn40_2,
}


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: float | Sequence[float] = 0.0,
    std: float | Sequence[float] = 1.0,
) -> nn.Module:
    """A freshly initialised model `name` (one of MODELS) whose input normalisation uses mean / std."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
