"""Modules of the multi-resolution self-ensemble (Fort & Lakshminarayanan): the
multi-resolution input stack and the linear heads over intermediate layers."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustkernels import functional

from .seeds import NoiseStream


class MultiResStack(NoiseStream, nn.Module):
    """x [B, C, H, W] in [0, 1] -> [B, C * len(resolutions), H, W]: robustkernels.functional.multires_stack.

    Each call draws fresh randomness (the next seed of the module's noise stream,
    robustkernels.nn.seeds, handed to the op as a tensor, so a model compiled with
    fullgraph=True draws fresh views every call without recompiling) unless forward is given a
    seed; the first conv of the model that follows takes C * len(resolutions) input channels.
    """

    _stream_follows_device = True

    def __init__(
        self,
        resolutions: Sequence = (32, 16, 8, 4),
        *,
        jitter: int = 3,
        noise: float = 0.2,
        noise_kind: str = "uniform",
        contrast: tuple[float, float] = (0.5, 1.0),
        interpolation: str = "bicubic",
        antialias: bool = False,
        adjust_contrast: bool = True,
    ):
        super().__init__()
        self.resolutions = tuple(resolutions)
        self.antialias = antialias
        self.adjust_contrast = adjust_contrast
        self.jitter = jitter
        self.noise = noise
        self.noise_kind = noise_kind
        self.contrast = tuple(contrast)
        self.interpolation = interpolation
        self._init_noise_stream()

    @property
    def num_views(self) -> int:
        return len(self.resolutions)

    def forward(self, x: torch.Tensor, seed: int | torch.Tensor | None = None) -> torch.Tensor:
        return functional.multires_stack(
            x,
            self.resolutions,
            jitter=self.jitter,
            noise=self.noise,
            noise_kind=self.noise_kind,
            contrast=self.contrast,
            interpolation=self.interpolation,
            antialias=self.antialias,
            adjust_contrast=self.adjust_contrast,
            seed=self._next_seed(device=x.device) if seed is None else seed,
        )

    def extra_repr(self) -> str:
        return (
            f"resolutions={self.resolutions}, jitter={self.jitter}, noise={self.noise}, "
            f"noise_kind={self.noise_kind!r}, contrast={self.contrast}, interpolation={self.interpolation!r}, "
            f"antialias={self.antialias}, adjust_contrast={self.adjust_contrast}"
        )


POOLS = ("avg", None)


class IntermediateHeads(nn.Module):
    """One BatchNorm1d + Linear head per tapped layer, all evaluated in one call.

    forward(features) takes the tapped layers' outputs in order ([B, C_i, H_i, W_i]
    maps or [B, D_i] vectors) and returns the heads' logits stacked as [N, B, num_classes],
    the layout robustkernels.nn.CrossMax takes. pool="avg" global-average-pools each map
    (in_features: the channels C_i; cheap); pool=None flattens it, as the public notebook's
    heads do (in_features: C_i * H_i * W_i). The features of all heads are normalised by
    one batch-norm call over their concatenation (batch norm is per feature, so this
    equals N separate BatchNorm1d layers, whose parameters and statistics the heads keep).
    `head(i, feature)` runs head i alone (e.g. to train the heads one at a time).
    """

    def __init__(
        self,
        in_features: Sequence[int],
        num_classes: int,
        *,
        pool: str | None = "avg",
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        if len(in_features) == 0:
            raise ValueError("IntermediateHeads: in_features must name at least one layer's channel count")
        if pool not in POOLS:
            raise ValueError(f"IntermediateHeads: pool must be 'avg' or None, got {pool!r}")
        self.pool = pool
        self.in_features = tuple(int(f) for f in in_features)
        self.num_classes = num_classes
        self.norms = nn.ModuleList(nn.BatchNorm1d(f, eps=eps, momentum=momentum) for f in self.in_features)
        self.linears = nn.ModuleList(nn.Linear(f, num_classes) for f in self.in_features)

    def _vector(self, i: int, f: torch.Tensor) -> torch.Tensor:
        size = self.in_features[i]
        if f.dim() == 4:
            f = f.mean(dim=(2, 3)) if self.pool == "avg" else f.flatten(1)
        if f.dim() != 2 or f.shape[1] != size:
            what = (
                f"[B, {size}, H, W]" if self.pool == "avg" else "[B, C, H, W] with C * H * W = " + str(size)
            )
            raise ValueError(
                f"IntermediateHeads: feature {i} must be [B, {size}] or {what}, got {tuple(f.shape)}"
            )
        return f

    def _pooled(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.in_features):
            raise ValueError(
                f"IntermediateHeads: expected {len(self.in_features)} feature tensors, got {len(features)}"
            )
        return [self._vector(i, f) for i, f in enumerate(features)]

    def head(self, i: int, feature: torch.Tensor) -> torch.Tensor:
        """Head i's logits [B, num_classes] from its layer's output (its own batch norm)."""
        return self.linears[i](self.norms[i](self._vector(i, feature)))

    def _batch_norm(self, pooled: torch.Tensor) -> torch.Tensor:
        norms = list(self.norms)
        track = self.training or norms[0].running_mean is None
        running_mean = torch.cat([n.running_mean for n in norms])
        running_var = torch.cat([n.running_var for n in norms])
        out = F.batch_norm(
            pooled,
            running_mean,
            running_var,
            torch.cat([n.weight for n in norms]),
            torch.cat([n.bias for n in norms]),
            training=track,
            momentum=norms[0].momentum,
            eps=norms[0].eps,
        )
        if self.training:
            # F.batch_norm updated the concatenated copies: hand the statistics back.
            with torch.no_grad():
                for n, mean, var in zip(
                    norms,
                    running_mean.split(self.in_features),
                    running_var.split(self.in_features),
                    strict=True,
                ):
                    n.running_mean.copy_(mean)
                    n.running_var.copy_(var)
                    n.num_batches_tracked.add_(1)
        return out

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        normed = self._batch_norm(torch.cat(self._pooled(features), dim=1)).split(self.in_features, dim=1)
        return torch.stack([head(f) for head, f in zip(self.linears, normed, strict=True)])
