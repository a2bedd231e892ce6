"""Loading of the C++ extension robustkernels._C.

A failed load is recorded with its reason (shown by `python -m robustkernels.info`
and in the warning the ops give when they fall back to the reference), never
swallowed silently. Loading never initialises CUDA.
"""

import importlib
import os

_DISABLED_BY_ENV = os.environ.get("ROBUSTKERNELS_BUILD_EXT", "").strip().lower() in (
    "0",
    "false",
    "no",
    "off",
)

load_error: str | None = None
has_cuda_kernels = False

try:
    _C = importlib.import_module("robustkernels._C")
except ModuleNotFoundError as exc:
    _C = None
    if exc.name != "robustkernels._C":
        load_error = f"robustkernels._C failed to import: {exc}"
    elif _DISABLED_BY_ENV:
        load_error = "installed with ROBUSTKERNELS_BUILD_EXT=0 (pure-Python install)"
    else:
        load_error = (
            "robustkernels._C is not built (a pure-Python install such as ROBUSTKERNELS_BUILD_EXT=0); "
            "build it with `pip install --no-build-isolation .`"
        )
except ImportError as exc:  # built, but does not load (e.g. against another torch)
    _C = None
    load_error = (
        f"robustkernels._C failed to load: {exc}; rebuild it against the installed torch with "
        "`pip install --no-build-isolation .`"
    )
else:
    import torch

    has_cuda_kernels = hasattr(
        torch.ops.robustkernels, "noisy_weight_fwd_kernel"
    ) and torch._C._dispatch_has_kernel_for_dispatch_key("robustkernels::noisy_weight_fwd_kernel", "CUDA")


def is_loaded() -> bool:
    return _C is not None
