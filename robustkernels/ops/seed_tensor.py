"""Seeds handed to the ops as tensors.

Every noisy op takes its int seed(s) and an optional `seed_tensor`, a 0-dim int64 CPU tensor
whose value is added to them inside the op's implementation. A layer that draws a fresh seed
per call passes it this way: under torch.compile the op is opaque, so the changing value is
neither a Python int Dynamo would specialise on (a recompile per call) nor a tensor read in
traced code (a graph break); reading a CPU tensor costs no device sync. The kernels keep
their int seeds.

The weight ops (noisy_weight, noisy_conv2d, noisy_linear, path_weights, path_conv2d,
path_linear) and multires_stack also take a seed tensor on their GPU: they pass it to the kernels as `seed_offset`,
added on the device, so a CUDA graph that captured the call reads the layer's current seed at
every replay (robustkernels/nn/seeds.py).
"""

import torch

from robustkernels.ops import validation
from robustkernels.ops.device_values import constant_tensor

__all__ = [
    "check_layer_seed",
    "check_seed_offset",
    "check_seed_tensor",
    "offset_or_zero",
    "resolved_seed",
    "seed_offset",
]


def check_seed_tensor(seed_tensor, op: str, device: torch.device | None = None) -> None:
    """A seed given as a tensor must be one int64 value on the CPU, or, for the noisy weight ops,
    on their `device` (a layer's seed held on its GPU, see robustkernels.nn.seeds)."""
    validation.check_tensor("seed", seed_tensor, op)
    where_ok = seed_tensor.is_cpu or (device is not None and seed_tensor.device == device)
    if seed_tensor.dtype != torch.int64 or seed_tensor.dim() != 0 or not where_ok:
        place = "CPU" if device is None or device.type == "cpu" else f"CPU or {device}"
        raise ValueError(
            f"robustkernels.{op}: a seed given as a tensor must be a 0-dim int64 {place} tensor, got "
            f"{seed_tensor.dtype} of shape {tuple(seed_tensor.shape)} on {seed_tensor.device}"
        )


def check_layer_seed(seed_tensor, like: torch.Tensor, op: str) -> None:
    """A noisy weight op's seed_tensor, as its C++ op checks it (for the fakes): none, or one on
    the CPU or on `like`'s device."""
    if seed_tensor is not None:
        check_seed_tensor(seed_tensor, op, like.device)


def offset_or_zero(offset, device: torch.device) -> torch.Tensor:
    """What a Triton kernel reads at seed_offset_ptr: the call's device-held offset, or a kept zero."""
    return offset if offset is not None else constant_tensor((0,), torch.int64, device)


def check_seed_offset(offset, like: torch.Tensor, op: str) -> None:
    """A weight kernel's seed_offset: None, or a 0-dim int64 tensor on `like`'s device."""
    if offset is None:
        return
    validation.check_tensor("seed_offset", offset, op)
    if offset.dtype != torch.int64 or offset.dim() != 0 or offset.device != like.device:
        raise ValueError(
            f"robustkernels.{op}: seed_offset must be a 0-dim int64 tensor on {like.device}, got "
            f"{offset.dtype} of shape {tuple(offset.shape)} on {offset.device}"
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
