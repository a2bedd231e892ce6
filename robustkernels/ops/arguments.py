"""How the public functions (robustkernels.functional) take their arguments: seeds, int pairs,
conv padding, and the type checks that name the argument.

Validation is done once, in C++ (TORCH_CHECK naming the argument). A call whose argument has the
wrong type fails in the op's schema with a generic message, or earlier in Python: the noisy
functions catch those errors (TYPE_ERRORS) and only then run check_arguments, so a valid call
pays for no Python check.
"""

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from robustkernels import _extension
from robustkernels.ops import validation
from robustkernels.ops.seed_tensor import check_seed_tensor

LOADED = _extension.is_loaded()
TYPE_ERRORS = (TypeError, RuntimeError, AttributeError)


def seed_arguments(seed, op: str, device: torch.device | None = None) -> tuple[int, torch.Tensor | None]:
    """(int seed, seed tensor) of a seed given as an int or as a 0-dim int64 tensor on the CPU (or,
    for the noisy weight ops, on their `device`)."""
    if isinstance(seed, torch.Tensor):
        check_seed_tensor(seed, op, device)
        return 0, seed
    validation.check_seed(seed, op)
    return seed, None


def check_arguments(op: str, lam, seed, **tensors) -> tuple[int, torch.Tensor | None]:
    """The type checks that name the argument, run where the op's schema would reject the call
    with a generic message; returns the seed's arguments."""
    validation.check_lam(lam, op)
    weight = tensors.get("weight")
    seed_values = seed_arguments(seed, op, weight.device if isinstance(weight, torch.Tensor) else None)
    for name, value in tensors.items():
        if value is not None or name in ("x", "weight", "alpha"):
            validation.check_tensor(name, value, op)
    return seed_values


def seed_pair(lam, seed) -> tuple[int, torch.Tensor | None]:
    """(int seed, seed tensor) as the ops take a seed; raises on the bools the schema would take."""
    if lam.__class__ is bool or seed.__class__ is bool:
        raise TypeError("bool")
    return (0, seed) if isinstance(seed, torch.Tensor) else (seed, None)


def int_pair(value) -> list[int]:
    return [value, value] if value.__class__ is int else list(_pair(value))


def conv_padding(op: str, x: torch.Tensor, weight: torch.Tensor, padding, stride, dilation):
    """Explicit (x, padding) for int, pair or 'valid'/'same' padding, as nn.Conv2d accepts;
    weight's last two dimensions are the kernel's (kh, kw)."""
    if not isinstance(padding, str):
        return x, int_pair(padding)
    if padding == "valid":
        return x, [0, 0]
    if padding != "same":
        raise ValueError(
            f"robustkernels.{op}: padding must be an int, a pair, 'valid' or 'same', got {padding!r}"
        )
    if any(s != 1 for s in stride):
        raise ValueError(
            f"robustkernels.{op}: padding='same' needs stride 1, as in torch.nn.functional.conv2d"
        )
    totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[-2:], strict=True)]
    if all(t % 2 == 0 for t in totals):
        return x, [t // 2 for t in totals]
    # Odd total padding: pad the extra row / column on the right, as F.conv2d does.
    pad = []
    for total in reversed(totals):
        pad += [total // 2, total - total // 2]
    return F.pad(x, pad), [0, 0]
