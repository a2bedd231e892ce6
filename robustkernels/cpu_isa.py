"""The instruction-set path of the C++ CPU kernels: "scalar", "avx2" or "avx512".

The hot loops and the Philox blocks are compiled once per path (csrc/cpu/multiversion.h)
and all of them run the path selected here. The paths compute the same results bit for
bit, except the Philox normals of the scalar path, whose log / sin / cos come from libm
instead of SLEEF (an ULP or two apart). The default is ROBUSTKERNELS_CPU_SIMD
(scalar | avx2 | avx512 | best, read at the first kernel call) or else the best path this
CPU has; `use_cpu_isa` forces one, e.g. to test every path on one machine. The choice
is process-wide (every thread's kernels follow it), and a path the CPU lacks raises.
"""

import contextlib

import torch

from robustkernels import _extension

ISAS = ("scalar", "avx2", "avx512")


def _ops():
    if not _extension.is_loaded():
        raise RuntimeError(
            f"robustkernels: the CPU instruction-set paths need the C++ extension: {_extension.load_error}"
        )
    return torch.ops.robustkernels


def supported_isas() -> list[str]:
    """The paths this CPU can run, worst first."""
    return list(_ops().supported_cpu_isas())


def selected_isa() -> str:
    """The path the CPU kernels run now."""
    return _ops().cpu_isa()


def unsupported_reason(isa: str) -> str | None:
    """None when this machine can run `isa`, else why not."""
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
    if not _extension.is_loaded():
        return _extension.load_error
    supported = supported_isas()
    if isa in supported:
        return None
    return f"this CPU has no {isa} path (it supports {', '.join(supported)})"


def set_cpu_isa(isa: str) -> None:
    """Select the path of every CPU kernel from now on: one of ISAS, or "best"."""
    _ops().set_cpu_isa(isa)


@contextlib.contextmanager
def use_cpu_isa(isa: str):
    """Run the CPU kernels inside the block on one path, e.g. `with use_cpu_isa("avx2"):`."""
    ops = _ops()
    previous = ops.cpu_isa()
    ops.set_cpu_isa(isa)
    try:
        yield
    finally:
        ops.set_cpu_isa(previous)
