"""`python -m robustkernels.info`: which backends each op has on this machine, and why.

Reports the C++ extension, Triton and CUDA state without initialising CUDA
unless a GPU is actually present.
"""

import platform

import torch

from robustkernels import __version__, _extension, cpu_isa
from robustkernels import triton as _triton
from robustkernels.ops.backend import BACKENDS, select, unavailable_reason
from robustkernels.ops.catalog import PUBLIC_OPS


def _devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def _cpu_isa_line() -> str:
    if not _extension.is_loaded():
        return "  CPU instruction-set paths: none (no C++ extension)"
    try:
        selected = cpu_isa.selected_isa()
    except ValueError as exc:  # a ROBUSTKERNELS_CPU_SIMD this CPU cannot run
        selected = f"none ({exc})"
    return (
        f"  CPU instruction-set paths: {', '.join(cpu_isa.supported_isas())} available, {selected} selected"
        " ('use_cpu_isa' / ROBUSTKERNELS_CPU_SIMD picks one)"
    )


def report() -> str:
    lines = [
        f"robustkernels {__version__}",
        f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"C++ extension robustkernels._C: {'loaded' if _extension.is_loaded() else 'NOT loaded: ' + str(_extension.load_error)}",
        f"  CUDA kernels: {'built' if _extension.has_cuda_kernels else 'not built'}",
        _cpu_isa_line(),
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
        for op in PUBLIC_OPS:
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
