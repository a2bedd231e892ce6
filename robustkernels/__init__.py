"""robustkernels: fused PyTorch kernels for adversarial-robustness research.

Importing the package never initialises CUDA. `python -m robustkernels.info`
shows which backends each op has on this machine and why.
"""

from robustkernels import cpu_isa, functional, nn, ops, paths, reference
from robustkernels.cpu_isa import use_cpu_isa
from robustkernels.ops.backend import use_backend

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "cpu_isa",
    "functional",
    "nn",
    "ops",
    "paths",
    "reference",
    "use_backend",
    "use_cpu_isa",
]
