"""Routed convolutions and linear layers: GatedConv2d (Ensemble-in-One), MaskedExpertConv2d
(SMART), EnsembleConv2d (EED ensembles) and PathLinear; their routes are those of
robustkernels.nn.routing."""

import math

import torch
from torch import nn

from robustkernels import functional
from robustkernels.nn.noisy import ALPHA_INIT, alpha_shape

from .routing import _Routed


def _init_bank(module: nn.Module, entries: int | None, shape, bias: bool, device, dtype) -> None:
    """module.weight [entries, *shape] ([*shape] when entries is None) and module.bias
    [entries, shape[0]] (or None), each entry initialised as nn.Conv2d / nn.Linear initialise theirs."""
    factory = {"device": device, "dtype": dtype}
    lead = () if entries is None else (entries,)
    module.weight = nn.Parameter(torch.empty((*lead, *shape), **factory))
    module.bias = nn.Parameter(torch.empty((*lead, shape[0]), **factory)) if bias else None
    weight = module.weight.data if entries is not None else module.weight.data.unsqueeze(0)
    for p in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[p], a=math.sqrt(5))
    if module.bias is not None:
        fan_in = weight[0].numel() // weight.shape[1]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(module.bias.data, -bound, bound)


class _PathConv(_Routed):
    """Convolution geometry shared by the routed convolutions (as nn.Conv2d stores it)."""

    def _init_conv(
        self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
    ):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels and out_channels must be divisible by groups={groups}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(
                f"padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}"
            )
        pair = nn.modules.utils._pair
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.groups, self.padding_mode = groups, padding_mode
        # the explicit pad for padding_mode != "zeros", in F.pad's order (as nn.Conv2d computes it)
        conv = nn.Conv2d(1, 1, self.kernel_size, padding=padding, dilation=dilation, device="meta")
        self._reversed_padding_repeated_twice = conv._reversed_padding_repeated_twice
        return (out_channels, in_channels // groups, *self.kernel_size)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias, **kwargs) -> torch.Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        route = self._resolve_route(x.shape[0], x.device)
        return functional.path_conv2d(
            x,
            weight,
            route,
            bias_bank=bias,
            num_paths=self.num_paths,
            stride=self.stride,
            padding=padding,
            dilation=self.dilation,
            groups=self.groups,
            **kwargs,
        )

    def _plain_conv(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            bias is not None,
            self.padding_mode,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv

    def _conv_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}"
        )


class GatedConv2d(_PathConv):
    """Ensemble-in-One's random gated block: n parallel convolutions with their own weights
    ([n, C_out, C_in/groups, kh, kw] and [n, C_out]); each sample takes the gate its route names."""

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
        n: int = 2,
        route="random",
    ):
        super().__init__()
        shape = self._init_conv(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        self.num_paths = n
        _init_bank(self, n, shape, bias, device, dtype)
        self._init_route(route)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._follows and isinstance(self.route, int) and not isinstance(self.route, bool):
            return self._one_gate_conv(x, self._resolve_route(x.shape[0], x.device))
        return self._conv(x, self.weight, self.bias)

    def _one_gate_conv(self, x: torch.Tensor, gate: int) -> torch.Tensor:
        """The whole batch through one gate (EIO's training route, a derived path): the platform
        convolution on that gate's weight, with no routing; the other gates get zero gradients."""
        if not 0 <= gate < self.num_paths:
            raise ValueError(f"route={gate} must name a gate in [0, {self.num_paths})")
        padding = self.padding
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        bias = None if self.bias is None else self.bias[gate]
        return nn.functional.conv2d(
            x, self.weight[gate], bias, self.stride, padding, self.dilation, self.groups
        )

    def derive(self, path: int) -> nn.Conv2d:
        """The plain nn.Conv2d of gate `path` (for deploying one path of the gated network)."""
        return self._plain_conv(self.weight[path], None if self.bias is None else self.bias[path])

    def extra_repr(self) -> str:
        return self._conv_repr() + self._route_repr()


def expert_masks(
    shape, density: float, overlap: float, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """SMART's clean and adversarial masks [2, *shape]: each keeps round(density * numel) weights,
    round(overlap * numel) of them kept by both (overlap is the density of M_C * M_A over the
    whole tensor, as SMART defines it); the rest are drawn uniformly at random."""
    if not 0 < density <= 1:
        raise ValueError(f"density must lie in (0, 1], got {density}")
    if not 0 <= overlap <= density:
        raise ValueError(f"overlap must lie in [0, density={density}], got {overlap}")
    numel = math.prod(shape)
    kept = round(density * numel)
    shared = round(overlap * numel)
    if 2 * kept - shared > numel:
        raise ValueError(
            f"density {density} with overlap {overlap} needs {2 * kept - shared} of {numel} weights; raise the overlap"
        )
    order = torch.randperm(numel, generator=generator)
    masks = torch.zeros(2, numel, dtype=torch.bool)
    masks[:, order[:shared]] = True
    masks[0, order[shared:kept]] = True
    masks[1, order[kept : 2 * kept - shared]] = True
    return masks.reshape(2, *shape).to(device)


class MaskedExpertConv2d(_PathConv):
    """SMART's two expert paths over one shared weight: path 0 (clean) uses M_clean * W, path 1
    (adversarial) M_adv * (W + lam * alpha * std(W) * eta). The masks are a bool buffer `masks`
    [2, ...] saved in the state_dict; with masks=None the paths differ by the noise alone, which
    is FLOAT's dual path (route="split" sends the first half of the batch clean, the second noisy)."""

    _stream_follows_device = True

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
        density: float | None = 0.5,
        overlap: float = 0.25,
        lam: float = 1.0,
        alpha_granularity: str = "layer",
        alpha_init: float = ALPHA_INIT,
        route=0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        shape = self._init_conv(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        factory = {"device": device, "dtype": dtype}
        self.num_paths = 2
        _init_bank(self, None, shape, bias, device, dtype)
        self.alpha_granularity = alpha_granularity
        self.alpha = nn.Parameter(
            torch.full(alpha_shape(alpha_granularity, self.weight), alpha_init, **factory)
        )
        self.lam = float(lam)
        self.seed: int | None = None
        self.last_seed: int | torch.Tensor | None = None
        masks = (
            None
            if density is None
            else expert_masks(shape, density, overlap, generator=generator, device=device)
        )
        self.register_buffer("masks", masks)
        self._init_route(route)

    def set_masks(self, masks: torch.Tensor | None) -> None:
        """Sets the [2, ...] clean / adversarial masks (None: both paths dense)."""
        if masks is not None and masks.shape != (2, *self.weight.shape):
            raise ValueError(f"masks must have shape {(2, *self.weight.shape)}, got {tuple(masks.shape)}")
        self.masks = None if masks is None else masks.to(device=self.weight.device, dtype=torch.bool)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # saved masks are restored even into a layer constructed without them
        if state_dict.get(prefix + "masks") is not None and self.masks is None:
            self.masks = torch.empty((2, *self.weight.shape), dtype=torch.bool, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._dual_path_conv(x, self.weight, self.bias, self.alpha, self.masks)

    def _dual_path_conv(self, x, weight, bias, alpha, masks) -> torch.Tensor:
        """The two paths over `weight` (the whole weight here, a slice in a slimmable subclass).
        A fixed int seed s gives the noisy path seed s; a drawn seed tensor t gives path p t + p."""
        seed = self.seed if self.seed is not None else self._next_seed(self.num_paths, device=weight.device)
        self.last_seed = seed
        # alpha of the clean path is a placeholder: its lam is 0, so it gets no noise and no gradient
        if not self._follows and isinstance(self.route, int) and not isinstance(self.route, bool):
            return self._one_path_conv(x, weight, bias, alpha, masks, self.route, seed)
        alpha = alpha.reshape(1, -1)
        noise = (
            torch.cat([torch.zeros_like(alpha), alpha]),
            [0.0, self.lam],
            [0, seed] if isinstance(seed, int) else seed,
        )
        return self._conv(x, weight, bias, mask_bank=masks, noise=noise)

    def _one_path_conv(self, x, weight, bias, alpha, masks, path: int, seed) -> torch.Tensor:
        """The whole batch on one path (an attack's forward, inference, a per-path training
        forward): the path's weight once (the fused noisy_weight op: the same Philox noise as
        path_conv2d, regenerated in its backward) and the platform convolution, with no routing."""
        if path not in (0, 1):
            raise ValueError(f"route must be 0 or 1 for a MaskedExpertConv2d, got {path}")
        self._resolve_route(x.shape[0], x.device)
        mask = None if masks is None else masks[path]
        if path == 1 and self.lam != 0:
            path_seed = seed if isinstance(seed, int) else seed + path  # as the routed call draws
            weight = functional.noisy_weight(weight, alpha, lam=self.lam, seed=path_seed, mask=mask)
        elif mask is not None:
            weight = weight * mask
        padding = self.padding
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return nn.functional.conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups)

    def derive(self, path: int) -> nn.Conv2d:
        """A plain nn.Conv2d holding path's masked weight (the adversarial path without its noise)."""
        weight = self.weight if self.masks is None else self.weight * self.masks[path]
        return self._plain_conv(weight, self.bias)

    def extra_repr(self) -> str:
        masks = "" if self.masks is None else f", density={self.masks[0].float().mean().item():.3f}"
        return (
            f"{self._conv_repr()}, alpha={self.alpha_granularity}, lam={self.lam}{masks}{self._route_repr()}"
        )


class EnsembleConv2d(_PathConv):
    """EED's K pruned sub-models of one layer: K weights [K, ...] (copies at conversion), each under
    its own bool mask (buffer `masks` [K, ...], or None for dense members). route="split" evaluates
    the members on K stacked copies of the batch at once (see EnsembleModel)."""

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
        members: int = 8,
        masks: torch.Tensor | None = None,
        route="split",
    ):
        super().__init__()
        shape = self._init_conv(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode
        )
        self.num_paths = members
        _init_bank(self, members, shape, bias, device, dtype)
        self.register_buffer("masks", None)
        self.set_masks(masks)
        self._init_route(route)

    def set_masks(self, masks: torch.Tensor | None) -> None:
        """Sets the [K, ...] member masks (None: dense members)."""
        if masks is not None and masks.shape != self.weight.shape:
            raise ValueError(f"masks must have shape {tuple(self.weight.shape)}, got {tuple(masks.shape)}")
        self.masks = None if masks is None else masks.to(device=self.weight.device, dtype=torch.bool)

    def prune(self, density: float) -> None:
        """Masks every member to its largest-magnitude `density` fraction of weights (EED's pruning)."""
        if not 0 < density <= 1:
            raise ValueError(f"density must lie in (0, 1], got {density}")
        flat = self.weight.detach().abs().reshape(self.num_paths, -1)
        keep = max(1, round(density * flat.shape[1]))
        threshold = flat.kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
        self.set_masks((flat >= threshold).reshape(self.weight.shape))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if state_dict.get(prefix + "masks") is not None and self.masks is None:
            self.masks = torch.empty(self.weight.shape, dtype=torch.bool, device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(x, self.weight, self.bias, mask_bank=self.masks)

    def derive(self, member: int) -> nn.Conv2d:
        """Member `member`'s layer as a plain nn.Conv2d (masked weight)."""
        weight = self.weight[member] if self.masks is None else self.weight[member] * self.masks[member]
        return self._plain_conv(weight, None if self.bias is None else self.bias[member])

    def extra_repr(self) -> str:
        return self._conv_repr() + self._route_repr()


class PathLinear(_Routed):
    """A routed linear layer (classifier heads): P weights [P, out, in] and biases [P, out]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        num_paths: int = 2,
        route=0,
    ):
        super().__init__()
        self.in_features, self.out_features, self.num_paths = in_features, out_features, num_paths
        _init_bank(self, num_paths, (out_features, in_features), bias, device, dtype)
        self._init_route(route)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self._resolve_route(x.shape[0], x.device)
        return functional.path_linear(x, self.weight, route, bias_bank=self.bias, num_paths=self.num_paths)

    def derive(self, path: int) -> nn.Linear:
        linear = nn.Linear(
            self.in_features, self.out_features, self.bias is not None, self.weight.device, self.weight.dtype
        )
        with torch.no_grad():
            linear.weight.copy_(self.weight[path])
            if self.bias is not None:
                linear.bias.copy_(self.bias[path])
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}" + self._route_repr()
