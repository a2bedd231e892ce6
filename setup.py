"""Build robustkernels and its C++ extension robustkernels._C.

Environment switches:
  ROBUSTKERNELS_BUILD_EXT=0   pure-Python install; ops fall back to the reference
  ROBUSTKERNELS_CUDA=0/1      force the CUDA sources off / on (default: on when the
                              installed torch has CUDA and nvcc is found)
  MAX_JOBS                    parallel compile jobs (read by torch's ninja build)

Install with `pip install --no-build-isolation .` into an environment that already has torch:
the extension is built against that torch, so it is not a build requirement (an isolated build
would download another torch, multi-GB where it is a CUDA build).
"""

import glob
import os
import shutil

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# The lowest torch the code needs: torch.library.custom_op with register_fake and
# register_autograd, which every op is built on, arrived in torch 2.4. Tested: torch 2.13.0
# (CPU; the version run.sh and CI pin) runs the whole suite; torch 2.11.0+cu130 built the CUDA
# extension and ran the GPU tests on an H200 (issue 11). Versions between 2.4 and 2.11 are untested.
TORCH_REQUIREMENT = "torch>=2.4"


def _flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() not in ("0", "false", "no", "off")


def _extensions():
    if _flag("ROBUSTKERNELS_BUILD_EXT") is False:
        print("robustkernels: ROBUSTKERNELS_BUILD_EXT=0, building no C++ extension")
        return [], {}

    try:
        import torch
    except ImportError as error:
        raise RuntimeError(
            "robustkernels builds its C++ extension against the installed torch: install torch first "
            "and build with `pip install --no-build-isolation .` (or set ROBUSTKERNELS_BUILD_EXT=0 for "
            "a pure-Python install)"
        ) from error
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = [
        "csrc/registration.cpp",
        "csrc/python_module.cpp",
        "csrc/kernel_choice.cpp",
        *sorted(glob.glob("csrc/ops/*.cpp")),
        *sorted(glob.glob("csrc/cpu/*.cpp")),
    ]
    # The kernels compile with OpenMP pragmas so at::parallel_for runs in parallel;
    # the OpenMP runtime itself is the one libtorch already loads, so no -fopenmp at link.
    # No contraction of a * b + c into one FMA: the AVX-512 variants of the CPU loops
    # would round differently from the AVX2 and scalar ones (csrc/cpu/multiversion.h).
    cxx_flags = ["-O3", "-fopenmp", "-std=c++17", "-ffp-contract=off"]
    want_cuda = _flag("ROBUSTKERNELS_CUDA")
    has_cuda = torch.version.cuda is not None and shutil.which("nvcc") is not None
    use_cuda = has_cuda if want_cuda is None else want_cuda
    if use_cuda and torch.version.cuda is None:
        raise RuntimeError(
            "ROBUSTKERNELS_CUDA=1 but the installed torch has no CUDA support; "
            "install a CUDA build of torch or unset ROBUSTKERNELS_CUDA"
        )
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*_launcher.cpp"))
        ext = CUDAExtension(
            "robustkernels._C",
            sources,
            extra_compile_args={
                "cxx": [*cxx_flags, "-DROBUSTKERNELS_WITH_CUDA"],
                "nvcc": ["-O3", "-std=c++17", "-DROBUSTKERNELS_WITH_CUDA"],
            },
        )
    else:
        ext = CppExtension("robustkernels._C", sources, extra_compile_args={"cxx": cxx_flags})
    print(f"robustkernels: building robustkernels._C ({'CPU + CUDA' if use_cuda else 'CPU'})")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="robustkernels",
    version="0.1.0",
    description="Fused PyTorch kernels for adversarial-robustness research",
    # python_api/ is installed as robustkernels.api, its subpackages with it
    packages=find_packages(include=["robustkernels", "robustkernels.*"])
    + [
        f"robustkernels.api{name[len('python_api') :]}"
        for name in find_packages(include=["python_api", "python_api.*"])
    ],
    package_dir={"robustkernels.api": "python_api"},
    python_requires=">=3.10",
    install_requires=[TORCH_REQUIREMENT, "numpy", "scikit-learn", "tqdm", "safetensors"],
    extras_require={"triton": ["triton"], "dev": ["pytest", "pytest-benchmark", "ruff", "triton"]},
    entry_points={"console_scripts": ["robustkernels=robustkernels.api.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
