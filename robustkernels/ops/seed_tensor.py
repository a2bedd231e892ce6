"""Seeds handed to the ops as tensors.

Every noisy op takes its int seed(s) and an optional `seed_tensor`, a 0-dim int64 CPU tensor
whose value is added to them inside the op's implementation. A layer that draws a fresh seed
per call passes it this way: under torch.compile the op is opaque, so the changing value is
neither a Python int Dynamo would specialise on (a recompile per call) nor a tensor read in
traced code (a graph break); reading a CPU tensor costs no device sync. The kernels keep
their int seeds.
"""

import torch

from robustkernels.ops import validation

__all__ = ["check_seed_tensor", "resolved_seed", "seed_offset"]


def check_seed_tensor(seed_tensor, op: str) -> None:
    """A seed given as a tensor must be one int64 value on the CPU."""
    validation.check_tensor("seed", seed_tensor, op)
    if seed_tensor.dtype != torch.int64 or seed_tensor.dim() != 0 or not seed_tensor.is_cpu:
        raise ValueError(
            f"robustkernels.{op}: a seed given as a tensor must be a 0-dim int64 CPU tensor, got "
            f"{seed_tensor.dtype} of shape {tuple(seed_tensor.shape)} on {seed_tensor.device}"
        )


def resolved_seed(seed: int, seed_tensor: torch.Tensor | None, op: str) -> int:
    """seed, plus the value of seed_tensor when one is given."""
    if seed_tensor is not None:
        check_seed_tensor(seed_tensor, op)
        seed = seed + int(seed_tensor)
    validation.check_seed(seed, op)  # here, not in the fake: there seed may be symbolic
    return seed


def seed_offset(seed_tensor: torch.Tensor | None) -> int:
    """The value a seed tensor adds (the pure-Python install's reference paths read it)."""
    return 0 if seed_tensor is None else int(seed_tensor)
