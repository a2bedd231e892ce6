"""Data-parallel training under `torchrun`: gloo on CPU, NCCL on GPU.

`torchrun --nproc-per-node N ...` sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous
variables; without them everything runs as a single process.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "resolve_device",
    "shutdown_distributed",
    "wrap_model",
]


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job (rank 0 of 1 when not distributed) and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto") -> torch.device:
    """ "auto" is CUDA when available, else the CPU; anything else is parsed by torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from error


def init_distributed(device: str = "auto") -> DistributedContext:
    """Joins the torchrun job when WORLD_SIZE > 1 and picks this process's device.

    A distributed CUDA job gives each process the GPU LOCAL_RANK and uses NCCL; a CPU
    job uses gloo.
    """
    chosen = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(0, 1, chosen)
    use_cuda = chosen.type == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(
        dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    )


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """`model` wrapped in DistributedDataParallel when the job is distributed, else `model` itself."""
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """The element-wise sum of `values` over all processes (values itself when not distributed)."""
    if context.enabled:
        values = values.to(context.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def barrier(context: DistributedContext) -> None:
    """Waits until every process gets here (no-op when not distributed)."""
    if context.enabled:
        dist.barrier()


def shutdown_distributed(wait: bool = True) -> None:
    """Leaves the torchrun job (no-op when not in one).

    With `wait`, every process meets first, so none tears down its connections while a peer is
    still using them: gloo can abort a process whose peer left early. Pass False on an error path,
    where a peer that failed would never arrive.
    """
    if not dist.is_initialized():
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
