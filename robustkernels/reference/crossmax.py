"""Reference of CrossMax, the aggregation of the multi-resolution self-ensemble
(Fort & Lakshminarayanan, "Ensemble everything everywhere"), written as the public
notebook writes it: a max subtraction over classes, a max subtraction over
predictors, then topk over predictors.

logits are [N, B, C] (N predictors); the result is [B, C].
"""

import torch

REDUCTIONS = ("kth", "topk_mean", "median")


def crossmax(
    logits: torch.Tensor, k: int = 3, reduction: str = "kth", predictor_dim: int = 0
) -> torch.Tensor:
    """kth: the k-th highest over predictors (the notebook's `topk(3)[2]`); topk_mean:
    the mean of the top k; median: the lower median over predictors (torch.median's
    convention: for even N the smaller of the two middle values; k is ignored)."""
    z = logits.movedim(predictor_dim, 0)
    z = z - z.max(dim=2, keepdim=True).values
    z = z - z.max(dim=0, keepdim=True).values
    if reduction == "median":
        return z.median(dim=0).values
    top = torch.topk(z, k, dim=0).values
    if reduction == "kth":
        return top[k - 1]
    if reduction == "topk_mean":
        return top.mean(dim=0)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
