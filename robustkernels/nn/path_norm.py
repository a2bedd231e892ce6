"""PathBatchNorm2d: batch norm with per-path statistics and affine parameters, routed as
the convolution before it (robustkernels.nn.routing)."""

import torch
from torch import nn

from robustkernels import functional

from .routing import _Routed


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
            self.num_batches_tracked[p].add_(1)  # in place on the view: `+=` would also copy it back
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
        # advanced indexing keeps a channels-last batch so (index_select returns NCHW) and gathers in parallel
        grouped = x[perm].split(counts.tolist())
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
