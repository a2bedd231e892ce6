"""Deterministic train / validation splits of a training set."""

import torch

__all__ = ["train_val_split"]


def train_val_split(
    images: torch.Tensor, labels: torch.Tensor, val_fraction: float, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train images, train labels), (val images, val labels)), stratified by class.

    Within each class the samples are permuted by a generator seeded with `seed` and the
    first round(val_fraction * class size) go to validation, so the split depends only on
    the data, the fraction and the seed. Both parts keep the original sample order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction!r}")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    generator = torch.Generator().manual_seed(seed)
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        chosen = members[torch.randperm(len(members), generator=generator)]
        is_val[chosen[: round(val_fraction * len(members))]] = True
    return (images[~is_val], labels[~is_val]), (images[is_val], labels[is_val])
