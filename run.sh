#!/usr/bin/env bash
# robustkernels' two commands on a fresh machine (Python 3.10+):
#   ./run.sh demo   set up, then run the main job on the embedded digits data
#                   (robustkernels reproduce all --budget smoke; extra arguments are passed on)
#   ./run.sh test   set up, then run the whole test suite (lint, nvcc check, pytest)
# and, once set up:
#   ./run.sh bench  run the benchmarks and write benchmarks/results/<machine>.csv
#                   (--rounds N: a short run of N rounds per benchmark)
#   ./run.sh info   show which backends each op has on this machine
# and, on a machine with an NVIDIA GPU (set up or not):
#   ./run.sh gpu-check  build with the CUDA kernels for this GPU, run the GPU tests, short benchmarks
#                   and reproduce float --budget smoke on CUDA, logs and results in
#                   benchmarks/results/<gpu>/, under 8 minutes (--dry-run: print the steps)
# The virtual environment lives in .venv (override with ROBUSTKERNELS_VENV).
set -euo pipefail
cd "$(dirname "$0")"

VENV="${ROBUSTKERNELS_VENV:-.venv}"
PY="$VENV/bin/python"
TORCH_VERSION=2.13.0
TRITON_VERSION=3.9.0

install_dependencies() {
    if [ ! -x "$PY" ]; then
        python3 -m venv "$VENV"
    fi
    # Pinned (a loose requirement would pull the newest, multi-GB CUDA build).
    # ROBUSTKERNELS_TORCH_INDEX=https://download.pytorch.org/whl/cpu picks the CPU
    # build where the package index would otherwise give the CUDA one.
    "$PY" -m pip install -q ${ROBUSTKERNELS_TORCH_INDEX:+--index-url "$ROBUSTKERNELS_TORCH_INDEX"} "torch==$TORCH_VERSION"
    # A CUDA build of torch brings its own matching Triton; otherwise install the tested one.
    "$PY" -c "import triton" 2>/dev/null || "$PY" -m pip install -q "triton==$TRITON_VERSION"
    "$PY" -m pip install -q numpy scikit-learn ninja setuptools wheel pytest pytest-benchmark ruff \
        tqdm safetensors matplotlib pillow
}

setup() {
    install_dependencies
    # --no-build-isolation: build against the torch installed above.
    MAX_JOBS="${MAX_JOBS:-2}" "$PY" -m pip install -q --no-build-isolation -e .
}

case "${1:-}" in
    demo)
        setup
        shift
        "$VENV/bin/robustkernels" reproduce all --budget smoke "$@"
        ;;
    test)
        setup
        shift
        "$PY" -m ruff check .
        "$PY" -m ruff format --check .
        "$PY" -m robustkernels.info
        "$PY" -m pytest tests "$@"
        ;;
    bench)
        shift
        "$PY" benchmarks/report.py "$@"
        ;;
    info)
        "$PY" -m robustkernels.info
        ;;
    gpu-check)
        shift
        install_dependencies
        # builds with CUDA itself, for the GPU it finds (or says there is none and exits 1)
        "$PY" benchmarks/gpu_check.py "$@"
        ;;
    *)
        sed -n '2,15p' "$0"
        exit 2
        ;;
esac
