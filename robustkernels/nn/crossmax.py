"""CrossMax aggregation of a multi-resolution self-ensemble as a module."""

from collections.abc import Sequence

import torch
from torch import nn

from robustkernels import functional


class CrossMax(nn.Module):
    """Aggregates the logits of N predictors with CrossMax (see robustkernels.functional.crossmax).

    forward takes logits [N, B, C] (predictors on `predictor_dim`) or a sequence of N
    tensors [B, C] (e.g. one per intermediate-layer head), which are stacked on
    `predictor_dim`, and returns [B, C].
    """

    def __init__(self, k: int = 3, reduction: str = "kth", predictor_dim: int = 0):
        super().__init__()
        self.k = k
        self.reduction = reduction
        self.predictor_dim = predictor_dim

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor):
            logits = torch.stack(list(logits), dim=self.predictor_dim)
        return functional.crossmax(
            logits, k=self.k, reduction=self.reduction, predictor_dim=self.predictor_dim
        )

    def extra_repr(self) -> str:
        return f"k={self.k}, reduction={self.reduction!r}, predictor_dim={self.predictor_dim}"
