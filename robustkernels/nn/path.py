"""Routed multi-path modules: Ensemble-in-One gated blocks, SMART masked experts, EED ensembles.

Every module here holds P paths and sends each sample through the path its `route` names:

- an int tensor [B]: one path per sample;
- an int p: the whole batch through path p;
- "split": the batch in P equal contiguous segments, segment p through path p (FLOAT's
  clean / adversarial halves, the K stacked copies of an ensemble's input);
- a list of P segment sizes;
- "random": a fresh uniform path per sample on every forward (random-gated inference), drawn
  from the module's noise stream (robustkernels.nn.seeds), never from torch's generator.

`set_route(model, route)` / `use_route(model, route)` set it on every routed module of a
model; `use_path(model, path)` gives each GatedConv2d block its own gate (an EIO path).
A PathBatchNorm2d made by a convert helper follows the routed conv before it, so conv and
batch norm always see the same route.
"""

import contextlib
import math

import torch
from torch import nn

from robustkernels import functional
from robustkernels.nn.noisy import ALPHA_INIT, _alpha_shape
from robustkernels.ops.random_route import random_route

from .restore import restoring
from .seeds import NoiseStream


class _Routed(NoiseStream, nn.Module):
    """The route of a routed module: set by the user, resolved per forward ("random" draws from
    the module's noise stream, robustkernels.nn.seeds)."""

    num_paths: int

    def _init_route(self, route) -> None:
        self.route = route
        self.last_route = None
        self._follows: list[nn.Module] = []  # a list, so the followed module is not a child
        self._init_noise_stream()

    def follow(self, module: "_Routed | None") -> None:
        """Use `module`'s route of its latest forward instead of this module's own."""
        self._follows = [] if module is None else [module]

    def _resolve_route(self, batch: int, device: torch.device):
        if self._follows:
            route = self._follows[0].last_route
            if route is None:
                raise RuntimeError(f"{type(self).__name__} follows a module that has not run a forward yet")
        elif isinstance(self.route, str) and self.route == "random":
            route = random_route(batch, self.num_paths, self._next_seed(), device)
        else:
            route = self.route
        self.last_route = route
        return route

    def _route_repr(self) -> str:
        shown = "follows" if self._follows else self.route
        if isinstance(shown, torch.Tensor):
            shown = f"tensor[{shown.numel()}]"
        return f", paths={self.num_paths}, route={shown}"


def _init_conv_bank(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Each path initialised as nn.Conv2d / nn.Linear initialise their weights."""
    for p in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[p], a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel() // weight.shape[1]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(bias, -bound, bound)


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
        factory = {"device": device, "dtype": dtype}
        self.num_paths = n
        self.weight = nn.Parameter(torch.empty((n, *shape), **factory))
        self.bias = nn.Parameter(torch.empty((n, out_channels), **factory)) if bias else None
        _init_conv_bank(self.weight.data, None if self.bias is None else self.bias.data)
        self._init_route(route)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(x, self.weight, self.bias)

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
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        _init_conv_bank(self.weight.data.unsqueeze(0), None if self.bias is None else self.bias.data)
        self.alpha_granularity = alpha_granularity
        self.alpha = nn.Parameter(
            torch.full(_alpha_shape(alpha_granularity, self.weight), alpha_init, **factory)
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
        seed = self.seed if self.seed is not None else self._next_seed(self.num_paths)
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
        factory = {"device": device, "dtype": dtype}
        self.num_paths = members
        self.weight = nn.Parameter(torch.empty((members, *shape), **factory))
        self.bias = nn.Parameter(torch.empty((members, out_channels), **factory)) if bias else None
        _init_conv_bank(self.weight.data, None if self.bias is None else self.bias.data)
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
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.num_paths = in_features, out_features, num_paths
        self.weight = nn.Parameter(torch.empty((num_paths, out_features, in_features), **factory))
        self.bias = nn.Parameter(torch.empty((num_paths, out_features), **factory)) if bias else None
        _init_conv_bank(self.weight.data, None if self.bias is None else self.bias.data)
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


class PathBatchNorm2d(_Routed):
    """One set of batch-norm statistics and affine parameters per path ([P, C] each), routed like
    the convolutions: the dual BN of OAT / FLOAT, slimmable networks' switchable BN, per-gate BN of
    a gated block, per-member BN of an ensemble. Statistics of a path come from its samples only."""

    def __init__(
        self,
        num_features: int,
        num_paths: int = 2,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        route=0,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.num_paths = num_features, num_paths
        self.eps, self.momentum, self.affine, self.track_running_stats = (
            eps,
            momentum,
            affine,
            track_running_stats,
        )
        self.weight = nn.Parameter(torch.ones((num_paths, num_features), **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros((num_paths, num_features), **factory)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros((num_paths, num_features), **factory))
            self.register_buffer("running_var", torch.ones((num_paths, num_features), **factory))
            self.register_buffer(
                "num_batches_tracked", torch.zeros(num_paths, dtype=torch.long, device=device)
            )
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._init_route(route)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, num_paths: int, **kwargs) -> "PathBatchNorm2d":
        """Every path starts as a copy of `bn` (parameters and running statistics)."""
        factory = {
            "device": bn.weight.device if bn.affine else None,
            "dtype": bn.weight.dtype if bn.affine else None,
        }
        new = cls(
            bn.num_features,
            num_paths,
            bn.eps,
            bn.momentum,
            bn.affine,
            bn.track_running_stats,
            **factory,
            **kwargs,
        )
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                source = getattr(bn, name)
                if source is not None:
                    getattr(new, name).copy_(source.expand_as(getattr(new, name)))
        new.train(bn.training)
        return new

    def _norm(self, x: torch.Tensor, p: int, weight=None, bias=None) -> torch.Tensor:
        """Path p's batch norm; `weight` / `bias` replace its affine parameters (FiLM folded in)."""
        weight = self.weight[p] if weight is None and self.weight is not None else weight
        bias = self.bias[p] if bias is None and self.bias is not None else bias
        use_batch_stats = self.training or self.running_mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.running_mean is not None:
            self.num_batches_tracked[p] += 1
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked[p])
        return nn.functional.batch_norm(
            x,
            None if self.running_mean is None else self.running_mean[p],
            None if self.running_var is None else self.running_var[p],
            weight,
            bias,
            use_batch_stats,
            momentum,
            self.eps,
        )

    def _norm_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """Path p's channels in block p of x: per-channel statistics over P * C channels are
        exactly the per-path statistics, so one batch_norm call serves every path."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.running_mean is not None:
            self.num_batches_tracked += 1
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked[0])
        flat = lambda t: None if t is None else t.view(-1)  # noqa: E731  (views: running stats update in place)
        return nn.functional.batch_norm(
            x,
            flat(self.running_mean),
            flat(self.running_var),
            flat(self.weight),
            flat(self.bias),
            self.training or self.running_mean is None,
            momentum,
            self.eps,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"PathBatchNorm2d expects a 4-D input [B, C, H, W], got shape {tuple(x.shape)}")
        route = self._resolve_route(x.shape[0], x.device)
        if isinstance(route, int) and not isinstance(route, bool):
            return self._norm(x, route)
        if isinstance(route, str) and route == "stacked":
            return self._norm_stacked(x)
        if not isinstance(route, torch.Tensor):
            if route == "split":
                route = [x.shape[0] // self.num_paths] * self.num_paths
            parts = [self._norm(chunk, p) for p, chunk in enumerate(x.split(list(route))) if chunk.shape[0]]
            return torch.cat(parts)
        counts, perm = functional.route_sort(route, self.num_paths)
        grouped = x.index_select(0, perm).split(counts.tolist())
        parts = [self._norm(chunk, p) for p, chunk in enumerate(grouped) if chunk.shape[0]]
        normed = torch.cat(parts)
        return torch.empty_like(normed).index_copy_(0, perm, normed)

    def derive(self, path: int) -> nn.BatchNorm2d:
        factory = {"device": self.weight.device, "dtype": self.weight.dtype} if self.affine else {}
        bn = nn.BatchNorm2d(
            self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats, **factory
        )
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                if getattr(self, name) is not None:
                    getattr(bn, name).copy_(getattr(self, name)[path])
        bn.train(self.training)
        return bn

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"
            + self._route_repr()
        )


ROUTED = (GatedConv2d, MaskedExpertConv2d, EnsembleConv2d, PathLinear, PathBatchNorm2d)


# ---- conversion ---------------------------------------------------------------------------------


def _conv_geometry(conv: nn.Conv2d) -> dict:
    factory = {"device": conv.weight.device, "dtype": conv.weight.dtype}
    return dict(
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        **factory,
    )


def _copy_into(new: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    with torch.no_grad():
        new.weight.copy_(weight.expand_as(new.weight))
        if bias is not None:
            new.bias.copy_(bias.expand_as(new.bias))
    new.weight.requires_grad_(weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(bias.requires_grad)
    return new


def _replace(model: nn.Module, build, skip: tuple[str, ...]) -> nn.Module:
    """Replaces, in module order, each child for which build(child) returns a module; a layer
    shared by several parents stays shared. A PathBatchNorm2d built here follows the routed
    convolution converted just before it."""
    replaced: dict[int, nn.Module] = {}
    last_conv: list[_Routed] = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        for child_name, child in list(module._modules.items()):
            qualified = f"{name}.{child_name}" if name else child_name
            if child is None or qualified in skip:
                continue
            if id(child) not in replaced:
                new = build(child)
                if new is None:
                    continue
                new.train(child.training)
                if isinstance(new, PathBatchNorm2d) and last_conv:
                    new.follow(last_conv[-1])
                elif isinstance(new, _PathConv):
                    last_conv.append(new)
                replaced[id(child)] = new
            setattr(module, child_name, replaced[id(child)])
    return model


def _check_model(model: nn.Module, helper: str) -> None:
    if type(model) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d):
        raise TypeError(
            f"{helper} swaps the layers inside a model; to convert a single {type(model).__name__}, "
            "wrap it (e.g. nn.Sequential(layer)) or build the routed module directly"
        )


def convert_gated(
    model: nn.Module, n: int = 2, *, batchnorm: bool = True, linear: bool = False, skip: tuple[str, ...] = ()
) -> nn.Module:
    """Ensemble-in-One: every nn.Conv2d becomes a GatedConv2d of n gates, each a copy of the
    conv's weights (with batchnorm=True every nn.BatchNorm2d a PathBatchNorm2d of n paths following
    the conv before it; with linear=True every nn.Linear a PathLinear). Returns the model."""
    _check_model(model, "convert_gated")

    def build(child):
        if type(child) is nn.Conv2d:
            return _copy_into(GatedConv2d(**_conv_geometry(child), n=n), child.weight, child.bias)
        if batchnorm and type(child) is nn.BatchNorm2d:
            return PathBatchNorm2d.from_batchnorm(child, n)
        if linear and type(child) is nn.Linear:
            new = PathLinear(
                child.in_features, child.out_features, child.bias is not None, num_paths=n, route="random"
            )
            return _copy_into(new.to(child.weight), child.weight, child.bias)
        return None

    return _replace(model, build, skip)


def convert_masked_experts(
    model: nn.Module,
    *,
    density: float | None = 0.5,
    overlap: float = 0.25,
    lam: float = 1.0,
    alpha_granularity: str = "layer",
    alpha_init: float = ALPHA_INIT,
    batchnorm: bool = True,
    skip: tuple[str, ...] = (),
    generator: torch.Generator | None = None,
) -> nn.Module:
    """SMART (density < 1, masks of the given overlap) or FLOAT (density=None: no masks): every
    nn.Conv2d not in `skip` becomes a MaskedExpertConv2d keeping its weights; with batchnorm=True
    every nn.BatchNorm2d becomes a dual PathBatchNorm2d following the conv before it."""
    _check_model(model, "convert_masked_experts")
    noise = dict(
        density=density, overlap=overlap, lam=lam, alpha_granularity=alpha_granularity, alpha_init=alpha_init
    )

    def build(child):
        if type(child) is nn.Conv2d:
            new = MaskedExpertConv2d(**_conv_geometry(child), **noise, generator=generator)
            return _copy_into(new, child.weight, child.bias)
        if batchnorm and type(child) is nn.BatchNorm2d:
            return PathBatchNorm2d.from_batchnorm(child, 2)
        return None

    return _replace(model, build, skip)


def convert_ensemble(
    model: nn.Module,
    members: int = 8,
    *,
    density: float | None = None,
    batchnorm: bool = True,
    linear: bool = True,
    skip: tuple[str, ...] = (),
) -> nn.Module:
    """EED: every nn.Conv2d becomes an EnsembleConv2d of `members` copies of its weights (pruned to
    the largest-magnitude `density` fraction when given; EnsembleConv2d.set_masks sets others), every
    nn.BatchNorm2d a PathBatchNorm2d and every nn.Linear a PathLinear, all routed "split".
    Wrap the result in EnsembleModel to evaluate all members on one batch at once."""
    _check_model(model, "convert_ensemble")

    def build(child):
        if type(child) is nn.Conv2d:
            new = _copy_into(
                EnsembleConv2d(**_conv_geometry(child), members=members), child.weight, child.bias
            )
            if density is not None:
                new.prune(density)
            return new
        if batchnorm and type(child) is nn.BatchNorm2d:
            return PathBatchNorm2d.from_batchnorm(child, members, route="split")
        if linear and type(child) is nn.Linear:
            new = PathLinear(child.in_features, child.out_features, child.bias is not None, num_paths=members)
            new.route = "split"
            return _copy_into(new.to(child.weight), child.weight, child.bias)
        return None

    return _replace(model, build, skip)


class EnsembleModel(nn.Module):
    """Evaluates the K members of a convert_ensemble'd model on one batch in one pass; the output
    is [K, B, ...].

    layout="stacked" (default) runs the members side by side in the channels: the input is
    repeated K times along its channels, every EnsembleConv2d is one grouped convolution, every
    PathBatchNorm2d one batch norm over K * C channels and the PathLinear head one batched
    matmul, so the whole ensemble is one network of K-times-wider layers; channels_last (the
    default on CPU, where oneDNN's grouped convolutions are fastest in it) sets the memory
    format; in evaluation the batch runs in chunks of chunk_size samples (None: at once). layout="split" stacks the K copies along the batch instead (route "split"). Models
    whose layers mix features across channels outside these modules (e.g. a Flatten of spatial
    maps before the head) need layout="split"."""

    def __init__(
        self,
        model: nn.Module,
        members: int,
        *,
        layout: str = "stacked",
        channels_last: bool | None = None,
        chunk_size: int | None = 8,
    ):
        super().__init__()
        if layout not in ("stacked", "split"):
            raise ValueError(f'layout must be "stacked" or "split", got {layout!r}')
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.model, self.members, self.layout = model, members, layout
        self.channels_last, self.chunk_size = channels_last, chunk_size

    def _stacked(self, x: torch.Tensor) -> torch.Tensor:
        stacked = x.repeat(1, self.members, *([1] * (x.dim() - 2)))
        channels_last = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        if channels_last and stacked.dim() == 4:
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        return self.model(stacked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "split":
            stacked = x.unsqueeze(0).expand(self.members, *x.shape).reshape(-1, *x.shape[1:])
            with use_route(self.model, "split"):
                out = self.model(stacked)
            return out.reshape(self.members, x.shape[0], *out.shape[1:])
        with use_route(self.model, "stacked"):
            # K-times-wider activations of a whole batch leave the cache; in evaluation (batch
            # norm on running statistics, samples independent) chunks of the batch stay in it
            if self.model.training or self.chunk_size is None or x.shape[0] <= self.chunk_size:
                out = self._stacked(x)
            else:
                out = torch.cat([self._stacked(chunk) for chunk in x.split(self.chunk_size)])
        return out.reshape(x.shape[0], self.members, -1, *out.shape[2:]).transpose(0, 1)


# ---- routes on whole models ---------------------------------------------------------------------


def _routed_modules(model: nn.Module) -> list[_Routed]:
    return [m for m in model.modules() if isinstance(m, _Routed) and not m._follows]


def set_route(model: nn.Module, route) -> None:
    """Sets `route` on every routed module of the model (those following another keep following)."""
    for module in _routed_modules(model):
        module.route = route


@contextlib.contextmanager
def use_route(model: nn.Module, route):
    """`with use_route(model, route):` runs the block with `route` on every routed module, then
    restores each module's previous route."""
    with restoring(_routed_modules(model), "route"):
        set_route(model, route)
        yield model


def gated_blocks(model: nn.Module) -> list[GatedConv2d]:
    """The model's GatedConv2d blocks in module order (the order of a path's gates)."""
    return [m for m in model.modules() if isinstance(m, GatedConv2d)]


@contextlib.contextmanager
def use_path(model: nn.Module, path):
    """`with use_path(model, path):` gives the i-th GatedConv2d the route path[i] (an int gate for
    the whole batch, or a tensor [B] of per-sample gates), e.g. a row of sample_paths(...)."""
    blocks = gated_blocks(model)
    path = path.tolist() if isinstance(path, torch.Tensor) and path.dim() == 1 else list(path)
    if len(path) != len(blocks):
        raise ValueError(f"path must name one gate per gated block ({len(blocks)}), got {len(path)}")
    with restoring(blocks, "route"):
        for block, gate in zip(blocks, path, strict=True):
            block.route = gate
        yield model


def derive(model: nn.Module, path) -> nn.Module:
    """A plain copy of a converted model on one path: every routed module replaced by its derived
    plain layer (GatedConv2d blocks take path[i] in module order when `path` is a sequence, every
    other routed module, and every block when `path` is an int, takes path itself)."""
    import copy

    plain = copy.deepcopy(model)
    blocks = gated_blocks(plain)
    gates = [path] * len(blocks) if isinstance(path, int) else [int(g) for g in path]
    if len(gates) != len(blocks):
        raise ValueError(f"path must name one gate per gated block ({len(blocks)}), got {len(gates)}")
    gate_of = {id(b): g for b, g in zip(blocks, gates, strict=True)}
    last_gate = [gates[0] if gates else 0]

    def build(child):
        if not isinstance(child, ROUTED):
            return None
        if isinstance(child, GatedConv2d):
            last_gate[0] = gate_of[id(child)]
            return child.derive(last_gate[0])
        if (
            isinstance(child, PathBatchNorm2d)
            and child._follows
            and isinstance(child._follows[0], GatedConv2d)
        ):
            return child.derive(gate_of[id(child._follows[0])])
        return child.derive(path if isinstance(path, int) else last_gate[0])

    return _replace(plain, build, ())
