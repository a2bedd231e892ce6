"""The hand-written CUDA sources compile with nvcc alone, with no GPU and no CUDA torch.

csrc/cuda/*.cu hold the kernels and their raw-pointer launch functions and include
only CUDA headers and csrc/philox.h; the torch-facing code lives in
csrc/cuda/*_launcher.cpp. So every .cu must build with a bare `nvcc -c`.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CU_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))
# The .cu files and the headers they include (the launchers include the .cuh too).
TORCH_FREE_SOURCES = CU_SOURCES + sorted((CSRC / "cuda").glob("*.cuh"))
NVCC = shutil.which("nvcc")

# The macros torch.utils.cpp_extension passes to nvcc (COMMON_NVCC_FLAGS): the
# sources must build without the implicit half / bfloat16 conversions they disable.
TORCH_NVCC_DEFINES = [
    "-D__CUDA_NO_HALF_OPERATORS__",
    "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-D__CUDA_NO_HALF2_OPERATORS__",
]
NVCC_FLAGS = [
    "-c",
    "-std=c++17",
    "-O2",
    "-gencode",
    "arch=compute_80,code=sm_80",
    "-gencode",
    "arch=compute_90,code=sm_90",
    "-I",
    str(CSRC),
    *TORCH_NVCC_DEFINES,
]

_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.MULTILINE)
_TORCH_HEADER = re.compile(r"^(torch|ATen|c10|caffe2)/|^(torch/extension\.h|Python\.h|pybind11/)")


def test_cuda_sources_exist():
    assert CU_SOURCES, "no csrc/cuda/*.cu sources"


@pytest.mark.parametrize("source", TORCH_FREE_SOURCES, ids=lambda p: p.name)
def test_cu_sources_include_no_torch_headers(source):
    included = _INCLUDE.findall(source.read_text())
    torch_headers = [header for header in included if _TORCH_HEADER.search(header)]
    assert not torch_headers, f"{source.name} includes torch / ATen / c10 headers: {torch_headers}"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CU_SOURCES, ids=lambda p: p.name)
def test_cu_source_compiles_with_nvcc(source, tmp_path):
    command = [NVCC, *NVCC_FLAGS, str(source), "-o", str(tmp_path / f"{source.stem}.o")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"nvcc failed on {source.name} (exit {result.returncode})\n"
        f"command: {' '.join(command)}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout}"
    )
    assert (tmp_path / f"{source.stem}.o").stat().st_size > 0


LAUNCHERS = sorted((CSRC / "cuda").glob("*_launcher.cpp"))
CXX = shutil.which("g++") or shutil.which("c++")


def _cuda_include() -> Path | None:
    """The CUDA toolkit's headers: $CUDA_HOME, $CUDA_PATH or /usr/local/cuda."""
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    includes = [Path(home) / "include" for home in homes if home]
    return next((include for include in includes if (include / "cuda_runtime.h").exists()), None)


@pytest.mark.skipif(
    _cuda_include() is None or CXX is None, reason="needs the CUDA toolkit's headers and a C++ compiler"
)
@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda p: p.name)
def test_cuda_launcher_parses_against_torch_headers(launcher, tmp_path):
    """The torch-facing launchers build only in a CUDA build of torch, which no CPU machine makes:
    a syntax-only pass against this torch's headers (which ship c10/cuda, less one generated
    header, stubbed here) and the toolkit's catches their errors before a GPU session does."""
    import torch.utils.cpp_extension as cpp_extension

    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n")
    includes = [tmp_path, *cpp_extension.include_paths(), _cuda_include(), CSRC]
    command = [CXX, "-std=c++20", "-fsyntax-only", *(f"-I{path}" for path in includes), str(launcher)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert result.returncode == 0 and not errors, f"{launcher.name} does not parse:\n" + "\n".join(
        errors[:20]
    )
