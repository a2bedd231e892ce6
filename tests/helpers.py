"""Shared test helpers: the backends and devices under test, and the tolerances per dtype.

The device convention of every op test: inputs are built on the CPU from seeded CPU generators
(the same values on every device) and moved with `target.to(...)`; every further tensor handed to
the op under test (an incoming gradient, a per-sample step, a route) is built on `target.device`
or on the device of the op's output (`like=`); results are compared on the CPU (`.cpu()`) against
oracles computed on the CPU. So the same test function runs the C++ kernels, the reference and
the Triton interpreter on a CPU machine, and Triton, the CUDA kernels and the reference on a GPU.
"""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from robustkernels.ops import backend as backend_choice
from robustkernels.ops.backend import unavailable_reason

GPU = torch.cuda.is_available()

TOLERANCE = {
    torch.float64: {"atol": 1e-10, "rtol": 1e-10},
    torch.float32: {"atol": 2e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 2e-2, "rtol": 1.6e-2},
}
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Target:
    """One backend on one device: what a parametrised op test runs."""

    backend: str
    device: str

    def to(self, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
        return [None if t is None else t.to(self.device) for t in tensors]


def _devices(backend: str) -> list[str]:
    """The devices `backend` is tested on here: Triton on the GPU when there is one (the
    interpreter only runs without one), the reference on both, the C++ kernels on the CPU."""
    if backend == "cpp":
        return ["cpu"]
    if backend == "cuda":
        return ["cuda"]
    if backend == "triton":
        return ["cuda" if GPU else "cpu"]
    return ["cpu", "cuda"] if GPU else ["cpu"]


def targets(*backends: str) -> list:
    """pytest params of Target for each backend on each of its devices, skipped with the reason
    where that backend cannot run here; ids such as "triton-cuda"."""
    params = []
    for backend in backends:
        for device in _devices(backend):
            reason = "no CUDA device" if device == "cuda" and not GPU else unavailable_reason(backend, device)
            marks = [pytest.mark.skipif(reason is not None, reason=f"{backend} on {device}: {reason}")]
            if backend == "triton":
                marks.append(pytest.mark.triton)
            if device == "cuda":
                marks.append(pytest.mark.cuda)
            params.append(pytest.param(Target(backend, device), id=f"{backend}-{device}", marks=marks))
    return params


def require_backend(name: str, device: str = "cpu") -> None:
    reason = unavailable_reason(name, device)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable on {device}: {reason}")


def seeded_normal(shape, seed: int, dtype: torch.dtype = torch.float32, like: torch.Tensor | None = None):
    """N(0, 1) values from a seeded CPU generator (the same on every device), in `dtype` on the
    device of `like` (the CPU without it): the incoming gradient of a backward, for instance."""
    values = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return values.to(dtype=dtype, device=None if like is None else like.device)


def assert_half_close(actual: torch.Tensor, same_dtype: torch.Tensor, oracle: torch.Tensor, what: str = ""):
    """The half-precision rule: the largest error of `actual` against the float64 `oracle` is at
    most twice that of `same_dtype`, the reference computed in actual's dtype, plus one unit in
    the last place of the oracle's largest magnitude (so that a reference that happens to be exact
    does not demand exactness of a kernel that rounds in another order)."""
    assert actual.dtype == same_dtype.dtype, f"{what}: {actual.dtype} vs the reference's {same_dtype.dtype}"
    oracle = oracle.detach().cpu().double()
    error = (actual.detach().cpu().double() - oracle).abs().max().item()
    reference_error = (same_dtype.detach().cpu().double() - oracle).abs().max().item()
    ulp = torch.finfo(actual.dtype).eps * oracle.abs().max().item()
    assert error <= 2 * reference_error + ulp, (
        f"{what}: {actual.dtype} error {error:.3g} exceeds twice the same-dtype reference's "
        f"{reference_error:.3g} (+ one ulp {ulp:.3g})"
    )


def grads_of(fn, tensors, device="cpu", seed=3):
    """fn's output and the gradients of `tensors` (copied to `device`) for a seeded incoming
    gradient, all back on the CPU (None for a tensor fn does not use)."""
    tensors = [t.detach().to(device, copy=True).requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    grad = seeded_normal(out.shape, seed, torch.float32, like=out).to(out.dtype)
    results = (out, *torch.autograd.grad(out, tensors, grad, allow_unused=True))
    return [None if r is None else r.cpu() for r in results]


class RecordingBar:
    """A stand-in for tqdm's bar that records what it is told: its total and every update
    (`bars` lists every bar made; monkeypatch `require` to return SimpleNamespace(tqdm=...))."""

    bars: ClassVar[list] = []

    def __init__(self, total, **_options):
        self.total, self.done = total, 0
        RecordingBar.bars.append(self)

    def update(self, n):
        self.done += n

    def write(self, line):
        print(line)

    def close(self):
        pass


def record_backend_selections(monkeypatch) -> list[str]:
    """The ops whose backend Python selects from now on: the use_backend path selects one per
    kernel call, the default path of an op dispatched in C++ none."""
    calls = []
    original = backend_choice.select
    monkeypatch.setattr(backend_choice, "select", lambda op, device: calls.append(op) or original(op, device))
    return calls
