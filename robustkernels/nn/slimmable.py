"""Slimmable FLOAT layers (FLOAT-Slim, Kundu et al.): one set of weights run at several widths.

At width w a layer of C output channels keeps its first `slim_channels(C, w)` channels, with
one rule everywhere (max(1, round-half-up(C * w))), so two layers of the same full width always
agree (the two operands of a ResNet's residual add, a shortcut and its block). Inputs need no
rule: every layer takes the first x.shape[1] input channels of its weight, so the first
convolution sees the whole image and the classifier the slimmed features.

- SlimmableMaskedExpertConv2d: FLOAT's dual-path noisy convolution (MaskedExpertConv2d,
  through the fused path_conv2d op) on weight[:out_w, :in_w]; the noise's std is that of the
  slice, since path_conv2d computes std(W) over the weight it is given.
- SlimmableBatchNorm2d: one PathBatchNorm2d (the BN_C / BN_A pair) per width.
- SlimmableLinear: nn.Linear on the first x.shape[-1] input features. A classifier after a
  global pool sees the channels themselves; after flattening an NCHW map, the first
  c * H * W features are exactly the first c channels, so both are exact.

`convert_slimmable(model, widths)` swaps the layers in; `set_width` / `use_width` pick the width.
"""

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.nn.noisy import ALPHA_INIT
from robustkernels.nn.path_conv import MaskedExpertConv2d
from robustkernels.nn.path_convert import _check_model, _conv_geometry, _replace
from robustkernels.nn.path_norm import PathBatchNorm2d
from robustkernels.nn.restore import restoring

__all__ = [
    "SlimmableBatchNorm2d",
    "SlimmableLinear",
    "SlimmableMaskedExpertConv2d",
    "convert_slimmable",
    "model_widths",
    "set_width",
    "slim_channels",
    "use_width",
]


def slim_channels(channels: int, width: float) -> int:
    """The channels a layer of `channels` keeps at `width`: max(1, round-half-up(channels * width))."""
    return max(1, math.floor(channels * width + 0.5))


def _check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must lie in (0, 1], got {width!r}")
    return float(width)


def _check_widths(widths: Sequence[float]) -> tuple[float, ...]:
    """The widths, validated, distinct and ascending."""
    if isinstance(widths, (int, float)) or not widths:
        raise ValueError(f"widths must be a non-empty sequence of numbers in (0, 1], got {widths!r}")
    try:
        checked = [_check_width(w) for w in widths]
    except ValueError as error:
        raise ValueError(f"widths must all lie in (0, 1], got {tuple(widths)}") from error
    if len(set(checked)) != len(checked):
        raise ValueError(f"widths must be distinct, got {tuple(widths)}")
    return tuple(sorted(checked))


class _WidthAware:
    """The widths a layer was built for and the one it runs at."""

    def _init_widths(self, widths: Sequence[float]) -> None:
        self.widths = _check_widths(widths)
        self.width = self.widths[-1]

    def _width_repr(self) -> str:
        return f", widths={self.widths}, width={self.width}"


def _check_input_channels(x: torch.Tensor, available: int, name: str, dim: int, rank: int) -> int:
    """x's channel count in `dim` (x at least `rank`-D), at most the layer's `available`."""
    if x.dim() < rank or x.shape[dim] > available:
        raise ValueError(
            f"{name}: x must have at most {available} channels in dim {dim}, got shape {tuple(x.shape)}"
        )
    return x.shape[dim]


class SlimmableMaskedExpertConv2d(_WidthAware, MaskedExpertConv2d):
    """MaskedExpertConv2d (FLOAT's dual path by default: density=None) that runs at the current
    width on weight[:slim_channels(out_channels, width), :x.shape[1]] (alpha and masks sliced
    alike). The noise of the noisy path scales with the std of that slice. groups must be 1."""

    def __init__(self, *args, widths: Sequence[float] = (0.5, 1.0), density: float | None = None, **kwargs):
        super().__init__(*args, density=density, **kwargs)
        if self.groups != 1:
            raise ValueError(
                f"groups must be 1 for a slimmable convolution, got {self.groups} "
                "(slicing grouped or depthwise weights is not supported)"
            )
        self._init_widths(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_w = _check_input_channels(x, self.in_channels, type(self).__name__, 1, 4)
        out_w = slim_channels(self.out_channels, self.width)
        if (out_w, in_w) == (self.out_channels, self.in_channels):
            return super().forward(x)
        # contiguous: one dense layout on every backend (the CPU op gives the same on the strided slice)
        weight = self.weight[:out_w, :in_w].contiguous()
        bias = None if self.bias is None else self.bias[:out_w]
        alpha = self.alpha if self.alpha_granularity == "layer" else self.alpha[:out_w, :in_w].contiguous()
        masks = None if self.masks is None else self.masks[:, :out_w, :in_w].contiguous()
        return self._dual_path_conv(x, weight, bias, alpha, masks)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._width_repr()


def _leading_channels(bn: nn.BatchNorm2d, channels: int) -> nn.BatchNorm2d:
    """A copy of `bn` restricted to its first `channels` channels."""
    factory = {"device": bn.weight.device, "dtype": bn.weight.dtype} if bn.affine else {}
    part = nn.BatchNorm2d(channels, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, **factory)
    part.load_state_dict(
        {key: value[:channels] if value.dim() else value for key, value in bn.state_dict().items()}
    )
    return part


class SlimmableBatchNorm2d(_WidthAware, nn.Module):
    """Switchable batch norm: `norms[i]` is the PathBatchNorm2d (num_paths statistics and affine
    parameters, BN_C / BN_A for FLOAT) of widths[i] over its slim_channels(num_features, w)."""

    def __init__(
        self,
        num_features: int,
        widths: Sequence[float] = (0.5, 1.0),
        num_paths: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self._init_widths(widths)
        self.num_features = num_features
        self.norms = nn.ModuleList(
            PathBatchNorm2d(
                slim_channels(num_features, w),
                num_paths,
                eps,
                momentum,
                affine,
                track_running_stats,
                device,
                dtype,
            )
            for w in self.widths
        )

    @classmethod
    def from_batchnorm(
        cls, bn: nn.BatchNorm2d, widths: Sequence[float], num_paths: int = 2
    ) -> "SlimmableBatchNorm2d":
        """Every path of every width starts as `bn`'s first channels (parameters and statistics)."""
        new = cls(
            bn.num_features, widths, num_paths, affine=bn.affine, track_running_stats=bn.track_running_stats
        )
        new.norms = nn.ModuleList(
            PathBatchNorm2d.from_batchnorm(_leading_channels(bn, norm.num_features), num_paths)
            for norm in new.norms
        )
        new.train(bn.training)
        return new

    def current(self) -> PathBatchNorm2d:
        """The PathBatchNorm2d of the current width."""
        return self.norms[self.widths.index(self.width)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.current()
        if x.dim() != 4 or x.shape[1] != norm.num_features:
            raise ValueError(
                f"SlimmableBatchNorm2d at width {self.width} expects x [B, {norm.num_features}, H, W], "
                f"got shape {tuple(x.shape)}"
            )
        return norm(x)

    def extra_repr(self) -> str:
        return f"{self.num_features}" + self._width_repr()


class SlimmableLinear(nn.Linear):
    """nn.Linear on the first x.shape[-1] input features (all outputs kept: the classifier)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_w = _check_input_channels(x, self.in_features, type(self).__name__, -1, 1)
        return F.linear(x, self.weight[:, :in_w], self.bias)


def convert_slimmable(
    model: nn.Module,
    widths: Sequence[float] = (0.5, 1.0),
    *,
    lam: float = 1.0,
    alpha_granularity: str = "layer",
    alpha_init: float = ALPHA_INIT,
    num_bn_paths: int = 2,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """Converts `model` in place (weights kept): every nn.Conv2d becomes a
    SlimmableMaskedExpertConv2d (FLOAT's dual noisy path, groups=1 only), every nn.BatchNorm2d a
    SlimmableBatchNorm2d of num_bn_paths paths per width and every nn.Linear a SlimmableLinear.
    Layers in `skip` stay as they are (they then see slimmed inputs: skip only layers that cope).
    The model starts at its largest width."""
    _check_model(model, "convert_slimmable")
    widths = _check_widths(widths)

    def build(child):
        if type(child) is nn.Conv2d:
            if child.groups != 1:
                raise ValueError(
                    f"convert_slimmable: groups must be 1, got a convolution with groups={child.groups} "
                    "(skip it or keep the model's convolutions dense)"
                )
            new = SlimmableMaskedExpertConv2d(
                **_conv_geometry(child),
                widths=widths,
                lam=lam,
                alpha_granularity=alpha_granularity,
                alpha_init=alpha_init,
            )
            with torch.no_grad():
                new.weight.copy_(child.weight)
                if child.bias is not None:
                    new.bias.copy_(child.bias)
            return new
        if type(child) is nn.BatchNorm2d:
            return SlimmableBatchNorm2d.from_batchnorm(child, widths, num_bn_paths)
        if type(child) is nn.Linear:
            new = SlimmableLinear(child.in_features, child.out_features, child.bias is not None).to(
                child.weight
            )
            new.load_state_dict(child.state_dict())
            return new
        return None

    return _replace(model, build, skip)


def _width_aware(model: nn.Module) -> list[_WidthAware]:
    layers = [m for m in model.modules() if isinstance(m, _WidthAware)]
    if not layers:
        raise ValueError("model has no slimmable layers; convert it with convert_slimmable first")
    return layers


def model_widths(model: nn.Module) -> tuple[float, ...]:
    """The widths the model's slimmable layers were built for (ascending)."""
    return _width_aware(model)[0].widths


def set_width(model: nn.Module, width: float) -> None:
    """Runs every slimmable layer of the model at `width` (one of its widths)."""
    width = _check_width(width)
    layers = _width_aware(model)
    for layer in layers:
        if width not in layer.widths:
            raise ValueError(f"width {width} is not one of the model's widths {layer.widths}")
    for layer in layers:
        layer.width = width


@contextlib.contextmanager
def use_width(model: nn.Module, width: float):
    """`with use_width(model, width):` runs the block at `width`, then restores each layer's width.
    Composes with the route contexts, e.g. `with use_width(m, 0.5), float_inference(m, 0.7):`."""
    with restoring(_width_aware(model), "width"):
        set_width(model, width)
        yield model
