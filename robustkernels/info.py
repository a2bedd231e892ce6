"""`python -m robustkernels.info`: which backends each op has on this machine, and why.

Reports the C++ extension, Triton and CUDA state without initialising CUDA
unless a GPU is actually present.
"""

import platform

import torch

from robustkernels import __version__, _extension
from robustkernels import triton as _triton
from robustkernels.ops.backend import BACKENDS, select, unavailable_reason

OPS = (
    "noisy_weight",
    "noisy_conv2d",
    "noisy_linear",
    "philox_normal",
    "crossmax",
    "multires_stack",
    "pgd_step",
)
OPS += ("path_weights", "route_sort")


def _devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def report() -> str:
    lines = [
        f"robustkernels {__version__}",
        f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"C++ extension robustkernels._C: {'loaded' if _extension.is_loaded() else 'NOT loaded: ' + str(_extension.load_error)}",
        f"  CUDA kernels: {'built' if _extension.has_cuda_kernels else 'not built'}",
        f"Triton: {'available' if _triton.available else 'unavailable: ' + str(_triton.import_error)}"
        + (" (interpreter: TRITON_INTERPRET=1)" if _triton.INTERPRETER else ""),
        f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none visible'}",
        "",
    ]
    devices = _devices()
    for device in devices:
        lines.append(
            f"backends on {device} (default first; 'use_backend' / ROBUSTKERNELS_BACKEND picks one):"
        )
        for op in OPS:
            lines.append(f"  {op}: default = {select(op, torch.device(device))}")
        for backend in BACKENDS:
            reason = unavailable_reason(backend, device)
            lines.append(f"    {backend:<9} {'yes' if reason is None else 'no  (' + reason + ')'}")
        lines.append("")
    if "cuda" not in devices:
        lines.append(
            "cuda: no GPU visible; the Triton and CUDA backends are for GPU tensors"
            " (Triton also runs CPU tensors under TRITON_INTERPRET=1)"
        )
    return "\n".join(lines)


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
