"""Argument checks shared by the attacks: clear errors naming the argument."""

import torch

NORMS = ("linf", "l2")


def check_batch(x, y, *, name_y: str = "y") -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 1:
        raise ValueError("x must have a batch dimension")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64:
        raise TypeError(
            f"{name_y} must be an int64 tensor of labels, got {getattr(y, 'dtype', type(y).__name__)}"
        )
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name_y} must have shape [B] = [{x.shape[0]}], got {tuple(y.shape)}")


def check_norm(norm) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_nonnegative(name: str, value) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value >= 0
        or value == float("inf")
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
