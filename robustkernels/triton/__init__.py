"""Triton kernels (`@triton.jit` functions, and in specialisation.py the record of what the
launchers in robustkernels.ops launch; the launchers themselves live there).

Triton is optional: without it the GPU ops use the CUDA C++ kernels or the
reference. On a machine without a GPU the kernels run under Triton's interpreter
when TRITON_INTERPRET=1 is set before robustkernels is imported.
"""

import os

INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"

try:
    import triton  # noqa: F401
except ImportError as exc:
    available = False
    import_error: str | None = f"triton is not installed ({exc})"
else:
    available = True
    import_error = None
