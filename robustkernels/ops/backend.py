"""Which implementation an op runs on a given device.

Backends: "cpp" (C++ CPU kernels), "cuda" (hand-written CUDA C++ kernels), "triton"
(Triton kernels: on GPUs, or on CPU tensors under TRITON_INTERPRET=1) and
"reference" (pure PyTorch). By default CPU tensors use "cpp" and CUDA tensors
"triton" (the noisy weight family: its CUDA C++ kernels where they are built, as the
dispatcher picks them in C++); `use_backend(...)` or ROBUSTKERNELS_BACKEND picks one
explicitly, a test and debugging override: an explicit choice that cannot run raises
instead of silently falling back. The choice is process-wide, as the backward of a GPU
tensor runs on autograd's own thread.
"""

import contextlib
import os
import warnings

import torch

from robustkernels import _extension
from robustkernels import triton as _triton
from robustkernels.ops.catalog import DISPATCHED_IN_CPP

BACKENDS = ("cpp", "cuda", "triton", "reference")

_selected: list[str] = []  # use_backend's choices, innermost last
_warned: set[tuple[str, str]] = set()
# Default backend per (op, device type): what is installed does not change while running.
_defaults: dict[tuple[str, str], str] = {}


def _env_backend() -> str | None:
    name = os.environ.get("ROBUSTKERNELS_BACKEND", "").strip().lower()
    if not name:
        return None
    if name not in BACKENDS:
        raise ValueError(f"ROBUSTKERNELS_BACKEND must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Run the ops inside the block with one backend, e.g. `with use_backend("triton"):`."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    _selected.append(name)
    _sync_python_kernels()
    try:
        yield
    finally:
        _selected.pop()
        _sync_python_kernels()


def explicit_choice() -> str | None:
    """The backend chosen with use_backend or ROBUSTKERNELS_BACKEND, if any."""
    return _selected[-1] if _selected else _env_backend()


def _sync_python_kernels() -> None:
    """Tells the C++ composite ops (csrc/kernel_choice.h) whether to call the kernels chosen here."""
    if _extension.is_loaded():
        torch.ops.robustkernels.set_python_kernels(explicit_choice() is not None)


@contextlib.contextmanager
def restore_choice(name: str | None):
    """Re-enters a choice recorded at forward time. Autograd runs the backward of
    GPU tensors on its own thread, where the caller's use_backend is not set."""
    if name is None:
        yield
    else:
        with use_backend(name):
            yield


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """None when `backend` can run on `device_type`, else the reason it cannot."""
    if backend == "reference":
        return None
    if backend == "cpp":
        if device_type != "cpu":
            return "the C++ kernels run on CPU tensors only"
        return None if _extension.is_loaded() else _extension.load_error
    if backend == "cuda":
        if device_type != "cuda":
            return "the CUDA kernels run on CUDA tensors only"
        if not _extension.is_loaded():
            return _extension.load_error
        if not _extension.has_cuda_kernels:
            return "robustkernels._C was built without CUDA sources (CPU-only torch or no nvcc at build time)"
        return None
    if backend == "triton":
        if not _triton.available:
            return _triton.import_error
        if device_type == "cpu" and not _triton.INTERPRETER:
            return "Triton runs CPU tensors only under its interpreter (set TRITON_INTERPRET=1 before importing robustkernels)"
        if device_type not in ("cpu", "cuda"):
            return f"Triton kernels are not built for {device_type} tensors"
        return None
    raise ValueError(f"unknown backend {backend!r}")


def select(op: str, device: torch.device) -> str:
    """The backend `op` runs with on `device`."""
    explicit = explicit_choice()
    if explicit is not None:
        reason = unavailable_reason(explicit, device.type)
        if reason is not None:
            raise RuntimeError(
                f"robustkernels.{op}: backend {explicit!r} cannot run on {device.type}: {reason}"
            )
        return explicit
    cached = _defaults.get((op, device.type))
    if cached is not None:
        return cached
    _defaults[(op, device.type)] = chosen = _default_backend(op, device)
    return chosen


def select_without_cuda(op: str, device: torch.device, family: str) -> str:
    """`select` for an op family with no CUDA C++ kernel (Triton serves GPUs): an
    explicit "cuda" raises, a default "cuda" (no Triton) becomes the reference."""
    name = select(op, device)
    if name != "cuda":
        return name
    if explicit_choice() == "cuda":
        raise RuntimeError(
            f"robustkernels.{op}: backend 'cuda' has no {family} kernel; use 'triton' or 'reference'"
        )
    return "reference"


def _default_backend(op: str, device: torch.device) -> str:
    if device.type == "cpu":
        preferred = ("cpp",)
    else:
        preferred = ("cuda", "triton") if op in DISPATCHED_IN_CPP else ("triton", "cuda")
    reasons = []
    for backend in preferred:
        reason = unavailable_reason(backend, device.type)
        if reason is None:
            return backend
        reasons.append(f"{backend}: {reason}")
    if (op, device.type) not in _warned:
        _warned.add((op, device.type))
        warnings.warn(
            f"robustkernels.{op} on {device.type} falls back to the pure-PyTorch reference ({'; '.join(reasons)})",
            RuntimeWarning,
            stacklevel=4,
        )
    return "reference"


_sync_python_kernels()  # ROBUSTKERNELS_BACKEND
