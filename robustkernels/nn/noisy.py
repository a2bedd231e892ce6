"""Drop-in noisy / masked weight layers (FLOAT, PNI, SMART, EED).

NoisyConv2d and NoisyLinear subclass nn.Conv2d and nn.Linear: same constructor
arguments and state_dict keys, plus a learnable `alpha` and an optional bool
`mask` buffer. Each forward draws a fresh seed from the layer's noise stream
(robustkernels.nn.seeds: set_noise_seed / noise_seed, never torch's generator) unless
`seed` is fixed to an int.
"""

import torch
from torch import nn

from robustkernels import functional

from .seeds import NoiseStream

ALPHA_INIT = 0.25


def alpha_shape(granularity: str, weight: torch.Tensor) -> tuple[int, ...]:
    if granularity == "layer":
        return (1,)
    if granularity == "channel":
        return (weight.shape[0], *([1] * (weight.dim() - 1)))
    if granularity == "element":
        return tuple(weight.shape)
    raise ValueError(f"alpha_granularity must be 'layer', 'channel' or 'element', got {granularity!r}")


class _NoisyWeightMixin(NoiseStream):
    """alpha, lam, mask and the per-forward seed shared by the noisy layers."""

    _stream_follows_device = True

    def _init_noise(self, alpha_granularity: str, alpha_init: float, lam: float, mask: torch.Tensor | None):
        self.alpha_granularity = alpha_granularity
        shape = alpha_shape(alpha_granularity, self.weight)
        self.alpha = nn.Parameter(
            torch.full(shape, alpha_init, dtype=self.weight.dtype, device=self.weight.device)
        )
        self.lam = float(lam)
        self.seed: int | None = None
        self.last_seed: int | torch.Tensor | None = None
        self._init_noise_stream()
        self.register_buffer("mask", None)
        if mask is not None:
            self.set_mask(mask)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """Sets (or with None removes) the binary mask; pruned weights stay exactly zero."""
        if mask is None:
            self.mask = None
            return
        mask = torch.as_tensor(mask, device=self.weight.device)
        if mask.shape != self.weight.shape:
            raise ValueError(
                f"mask must have the weight's shape {tuple(self.weight.shape)}, got {tuple(mask.shape)}"
            )
        self.mask = mask.to(torch.bool)

    def _draw_seed(self) -> int | torch.Tensor:
        """The fixed int seed, or the next seed of the noise stream (a 0-dim int64 tensor, on the
        weight's GPU where there is one: see robustkernels.nn.seeds)."""
        seed = self.seed if self.seed is not None else self._next_seed(device=self.weight.device)
        self.last_seed = seed
        return seed

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A saved mask is restored even into a layer constructed without one.
        saved_mask = state_dict.get(prefix + "mask")
        if saved_mask is not None and self.mask is None:
            self.mask = torch.empty_like(saved_mask, dtype=torch.bool, device=self.weight.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _noise_repr(self) -> str:
        masked = f", mask density={self.mask.float().mean().item():.3f}" if self.mask is not None else ""
        return f", alpha={self.alpha_granularity}, lam={self.lam}{masked}"


class NoisyConv2d(_NoisyWeightMixin, nn.Conv2d):
    """nn.Conv2d whose weight is M * (W + lam * alpha * std(W) * eta) on every forward."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        alpha_granularity: str = "layer",
        alpha_init: float = ALPHA_INIT,
        lam: float = 1.0,
        mask: torch.Tensor | None = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        self._init_noise(alpha_granularity, alpha_init, lam, mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            x = torch.nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return functional.noisy_conv2d(
            x,
            self.weight,
            self.bias,
            self.alpha,
            lam=self.lam,
            seed=self._draw_seed(),
            mask=self.mask,
            stride=self.stride,
            padding=padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._noise_repr()


class NoisyLinear(_NoisyWeightMixin, nn.Linear):
    """nn.Linear whose weight is M * (W + lam * alpha * std(W) * eta) on every forward."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        alpha_granularity: str = "layer",
        alpha_init: float = ALPHA_INIT,
        lam: float = 1.0,
        mask: torch.Tensor | None = None,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_noise(alpha_granularity, alpha_init, lam, mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.noisy_linear(
            x, self.weight, self.bias, self.alpha, lam=self.lam, seed=self._draw_seed(), mask=self.mask
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + self._noise_repr()


def _noisy_from(layer: nn.Module, **noise) -> nn.Module:
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    if isinstance(layer, nn.Conv2d):
        new = NoisyConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
            **factory,
            **noise,
        )
    else:
        new = NoisyLinear(layer.in_features, layer.out_features, layer.bias is not None, **factory, **noise)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    new.weight.requires_grad_(layer.weight.requires_grad)  # frozen layers stay frozen
    if layer.bias is not None:
        new.bias.requires_grad_(layer.bias.requires_grad)
    new.train(layer.training)
    return new


def convert(
    model: nn.Module,
    *,
    linear: bool = False,
    alpha_granularity: str = "layer",
    alpha_init: float = ALPHA_INIT,
    lam: float = 1.0,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """Replaces the model's nn.Conv2d (and with linear=True its nn.Linear) layers in place.

    Weights and biases are kept; layers whose qualified name is in `skip` (e.g. the
    first conv, which FLOAT leaves noise-free) stay as they are. Returns the model.
    """
    targets = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    if type(model) in targets:
        raise TypeError(
            f"convert swaps the layers inside a model; to convert a single {type(model).__name__}, "
            "wrap it (e.g. nn.Sequential(layer)) or build NoisyConv2d / NoisyLinear directly"
        )
    noise = {"alpha_granularity": alpha_granularity, "alpha_init": alpha_init, "lam": lam}
    replaced: dict[int, nn.Module] = {}  # a layer shared by several parents stays shared
    for name, module in list(model.named_modules(remove_duplicate=False)):
        # _modules, not named_children(): the latter lists a layer held twice only once
        for child_name, child in list(module._modules.items()):
            qualified = f"{name}.{child_name}" if name else child_name
            if child is None or qualified in skip or type(child) not in targets:
                continue
            if id(child) not in replaced:
                replaced[id(child)] = _noisy_from(child, **noise)
            setattr(module, child_name, replaced[id(child)])
    return model


def set_noise_scale(model: nn.Module, lam: float) -> None:
    """Sets lam on every noisy layer of the model (0 turns the noise off)."""
    for module in model.modules():
        if isinstance(module, (NoisyConv2d, NoisyLinear)):
            module.lam = float(lam)
