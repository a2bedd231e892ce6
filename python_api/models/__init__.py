"""Models for the method layer.

The models take inputs in [0, 1] and normalise them inside (a `Normalize` module), so
attacks can work in pixel space with a [0, 1] box. They use plain nn.Conv2d / nn.Linear,
so `robustkernels.nn.convert(model)` can swap them for the noisy layers. Any sub-module's
output can be tapped by name (`feature_extractor`, `tap_features`).
"""

from .ensemble import AveragedEnsemble
from .features import feature_extractor, layer_names, tap_features
from .multires import MultiResModel, to_multires_model
from .normalize import Normalize
from .registry import MODELS, build_model
from .resnet import BasicBlock, ResNet, resnet18, resnet20, resnet34
from .self_ensemble import ModelEnsemble, SelfEnsemble
from .small_cnn import SmallCNN
from .vgg import VGG, vgg16_bn
from .wrn import WideBasicBlock, WideResNet, wrn16_8, wrn40_2

__all__ = [
    "MODELS",
    "VGG",
    "AveragedEnsemble",
    "BasicBlock",
    "ModelEnsemble",
    "MultiResModel",
    "Normalize",
    "ResNet",
    "SelfEnsemble",
    "SmallCNN",
    "WideBasicBlock",
    "WideResNet",
    "build_model",
    "feature_extractor",
    "layer_names",
    "resnet18",
    "resnet20",
    "resnet34",
    "tap_features",
    "to_multires_model",
    "vgg16_bn",
    "wrn16_8",
    "wrn40_2",
]
