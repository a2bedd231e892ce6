"""Stage 1 of EED: the training set in d random parts, one shared by every sub-model and one
private to each of the other d - 1 (spec B.1; d = 1: every sub-model sees all the data)."""

import torch

__all__ = ["split_subsets"]


def split_subsets(n: int, d: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index tensors, one per sub-model: the shared part plus that sub-model's private part
    (d - 1 sub-models, each on 2/d of the n samples), or [all n] for d = 1. Draw a new
    generator per criterion: the paper reshuffles the parts whenever the criterion changes."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be an int >= 1, got {d!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < d:
        raise ValueError(f"n must be an int >= d = {d}, got {n!r}")
    order = torch.randperm(n, generator=generator)
    if d == 1:
        return [order]
    parts = order.tensor_split(d)
    shared = parts[0]
    return [torch.cat([shared, private]) for private in parts[1:]]
