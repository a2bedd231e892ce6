"""What a launcher in robustkernels.ops can launch: one record per kernel specialisation.

Each launcher keeps beside it a `triton_specialisations()` generator built from the same
helpers that pick its constexprs, so a new block size or flag value is listed as soon as
it can be launched; tests/test_triton_compile.py compiles every record ahead of time for
sm_80 and sm_90 (no GPU needed) and records the registers, spills and shared memory.

Argument types follow Triton's launch-time rules for typical calls: tensors are
16-byte-aligned pointers, Python floats fp32, ints int32 unless named (seeds are int64).
"""

from dataclasses import dataclass
from typing import Any

import torch
import triton.language as tl

# One data type per ACC value: float16 and bfloat16 launch the float32 constexprs and change
# only the element type of loads and stores, so they are left out to keep the check short.
CHECKED_DTYPES = (torch.float32, torch.float64)
_TRITON_TYPES = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.uint8: "u8",
    torch.int32: "i32",
    torch.int64: "i64",
}
_DEFAULT_NUM_WARPS = 4
_OPTIONS = ("num_warps", "maxnreg")
# A register budget for launches whose kernels call out-of-line slow paths (fp64 division,
# sin/cos range reduction): without one, ptxas caps registers for occupancy (at 80 or 128
# a thread) and spills around those calls. The most a thread may hold, valid up to 8 warps.
MAX_REGISTERS = 255


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels accumulate `dtype` data in: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulator(dtype: torch.dtype):
    """The kernels' ACC constexpr for `dtype` data."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def representative_sizes(limit: int) -> tuple[int, ...]:
    """Sizes that reach every power-of-two block up to 2 * limit, each once with an odd size:
    2**k and 2**k + 1."""
    powers = [2**k for k in range((2 * limit).bit_length())]
    return tuple(size for power in powers for size in (power, power + 1))


@dataclass(frozen=True)
class Specialisation:
    kernel: Any  # a triton JITFunction
    signature: tuple[tuple[str, str], ...]  # every argument: its Triton type, or "constexpr"
    constexprs: tuple[tuple[str, Any], ...]
    options: tuple[tuple[str, int], ...]  # num_warps, and maxnreg where the launcher sets it

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(kernel, constexprs, argument types, options) as text: what the compile test
        reports and deduplicates on (a generator may yield one specialisation several times)."""
        constexprs = " ".join(f"{name}={value}" for name, value in self.constexprs)
        types = ",".join(kind for _, kind in self.signature if kind != "constexpr")
        options = " ".join(f"{name}={value}" for name, value in self.options)
        return self.kernel.__name__, constexprs, types, options


def specialise(kernel, launch: dict, dtype: torch.dtype, **types) -> Specialisation:
    """The record of `kernel[grid](..., **launch)` on `dtype` data.

    launch: the constexprs (and num_warps, maxnreg, if set) exactly as the launcher passes
    them. Arguments named `*_ptr` point to `dtype` and the others are int32 unless `types`
    names them: a torch dtype for a pointer, or a Triton scalar type ("fp32", "i64")."""
    launch = dict(launch)
    options = (("num_warps", launch.pop("num_warps", _DEFAULT_NUM_WARPS)),)
    options += tuple((name, launch.pop(name)) for name in _OPTIONS[1:] if name in launch)
    names = kernel.arg_names
    unknown = (set(launch) | set(types)) - set(names)
    if unknown:
        raise ValueError(f"{kernel.__name__} has no argument(s) {sorted(unknown)}")
    signature = []
    for name in names:
        if name in launch:
            kind = "constexpr"
        else:
            kind = types.get(name, dtype if name.endswith("_ptr") else "i32")
            if isinstance(kind, torch.dtype):
                kind = "*" + _TRITON_TYPES[kind]
        signature.append((name, kind))
    constexprs = tuple((name, launch[name]) for name in names if name in launch)
    return Specialisation(kernel, tuple(signature), constexprs, options)
