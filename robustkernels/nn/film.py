"""OAT's FiLM (Wang et al. 2020, "Once-for-All Adversarial Training", after Perez et al. 2018): a
per-channel affine transform of a batch norm's output whose scale and shift are computed from
the trade-off weight lam.

FiLM2d(C, d): lam is embedded as e(lam) = (1 - lam) * c_0 + lam * c_1 with two fixed random codes
c_0, c_1 in R^d (buffers); two fully-connected layers with a leaky ReLU between them (d -> C,
C -> 2C, sized by the feature map's channels, as the FLOAT paper describes OAT's module) give
(gamma, beta), and y = x * (1 + gamma) + beta. The second layer starts at zero, so a converted
model starts as the unconditioned one. On a slimmed input (C' < C channels) the first C' of
gamma and beta apply. `lam` is an attribute, set for a block by the method layer.

FiLMAfter(norm, film) runs the batch norm then its FiLM (how the converters insert it). On a
dual (or slimmable dual) batch norm routed to one path, the usual case, FiLM is folded into the
batch norm's affine: y = (x_hat * w + b) * s + t = x_hat * (w * s) + (b * s + t), one batch_norm
call instead of a batch norm and a second pass over the feature map (measured at 15% of an OAT
step unfolded: benchmarks/results/once_for_all_training.md). `fold=False` runs them apart.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.nn.path_norm import PathBatchNorm2d
from robustkernels.nn.slimmable import SlimmableBatchNorm2d

__all__ = ["FiLM2d", "FiLMAfter"]

EMBEDDING_DIM = 128


class FiLM2d(nn.Module):
    def __init__(
        self, channels: int, embedding_dim: int = EMBEDDING_DIM, *, generator: torch.Generator | None = None
    ):
        super().__init__()
        if channels < 1 or embedding_dim < 1:
            raise ValueError(f"channels and embedding_dim must be >= 1, got {channels}, {embedding_dim}")
        self.channels, self.embedding_dim = channels, embedding_dim
        codes = torch.randn(2, embedding_dim, generator=generator) / math.sqrt(embedding_dim)
        self.register_buffer("codes", codes)
        self.fc1 = nn.Linear(embedding_dim, channels)
        self.fc2 = nn.Linear(channels, 2 * channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.lam = 0.0

    def embedding(self) -> torch.Tensor:
        """e(lam) [1, d]."""
        return torch.lerp(self.codes[0], self.codes[1], float(self.lam)).unsqueeze(0)

    def scale_shift(self, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta) [channels] for the current lam."""
        gamma_beta = self.fc2(F.leaky_relu(self.fc1(self.embedding()), 0.2)).view(2, self.channels)
        return 1 + gamma_beta[0, :channels], gamma_beta[1, :channels]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] > self.channels:
            raise ValueError(f"FiLM2d expects x [B, <= {self.channels}, H, W], got shape {tuple(x.shape)}")
        scale, shift = self.scale_shift(x.shape[1])
        return torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1))

    def extra_repr(self) -> str:
        return f"{self.channels}, embedding_dim={self.embedding_dim}, lam={self.lam}"


class FiLMAfter(nn.Module):
    """`norm` (a dual or slimmable batch norm) followed by its FiLM2d, folded into the batch
    norm's affine where that is exact (`fold`, default True)."""

    def __init__(self, norm: nn.Module, film: FiLM2d, *, fold: bool = True):
        super().__init__()
        self.norm, self.film, self.fold = norm, film, fold

    def _foldable(self, x: torch.Tensor) -> PathBatchNorm2d | None:
        norm = self.norm.current() if isinstance(self.norm, SlimmableBatchNorm2d) else self.norm
        if not (self.fold and isinstance(norm, PathBatchNorm2d) and norm.affine and not norm._follows):
            return None
        route = norm.route
        if (
            isinstance(route, bool)
            or not isinstance(route, int)
            or x.dim() != 4
            or x.shape[1] != norm.num_features
        ):
            return None  # routed per sample, or a bad input the batch norm itself reports
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self._foldable(x)
        if norm is None:
            return self.film(self.norm(x))
        p = norm._resolve_route(x.shape[0], x.device)
        if not 0 <= p < norm.num_paths:
            raise ValueError(f"route must lie in [0, {norm.num_paths}), got {p}")
        scale, shift = self.film.scale_shift(x.shape[1])
        return norm._norm(x, p, weight=norm.weight[p] * scale, bias=torch.addcmul(shift, norm.bias[p], scale))

    def extra_repr(self) -> str:
        return f"fold={self.fold}"
