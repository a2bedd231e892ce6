"""Small tensors of host values (per-path lams and seeds, a stack's layout) on a kernel's device,
without synchronising the stream.

torch.tensor(values, device="cuda") copies from pageable host memory: a blocking copy that waits
for the stream, so one per launch would stall the host behind the GPU (and a CUDA graph cannot
capture it). Values that repeat (a layer's lams, a shape's layout) are copied once and kept;
values that change per call (seeds) go through pinned memory, asynchronously.
"""

import functools

import torch

__all__ = ["constant_tensor", "staged_tensor"]


def constant_tensor(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` on `device`, copied once per (values, dtype, device) and shared: never write to it."""
    if device.type == "cpu":
        return torch.tensor(values, dtype=dtype)
    return _kept(tuple(values), dtype, device)


@functools.cache  # never evicted: a captured CUDA graph may keep reading a kept tensor
def _kept(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)  # one blocking copy, on first use


def staged_tensor(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`values` on `device`; on a GPU through pinned memory, asynchronously (no stream sync)."""
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
