"""`./run.sh gpu-check`: everything a machine with an NVIDIA GPU can tell, in one go, in under 8 minutes.

    python benchmarks/gpu_check.py [--dry-run] [--out DIR]

Steps, each with its own time limit (STEP_SECONDS, 8 minutes in all) and its log:
  build      the C++ extension with the CUDA sources, for this GPU only (TORCH_CUDA_ARCH_LIST from its
             compute capability)
  info       python -m robustkernels.info (which backend each op runs with)
  tests      the GPU tests: pytest -m "cuda or triton" (every op test's CUDA and Triton targets)
  bench      benchmarks/report.py with short rounds (--rounds 3), its CSV into the folder
  graphs     benchmarks/cuda_graph_conv.py: the noisy conv layers against plain conv, eager and
             inside a CUDA graph (cuda-graph-conv.csv)
  reproduce  robustkernels reproduce float --budget smoke on CUDA
Everything goes into one folder named after the GPU, benchmarks/results/<gpu>/: build.log, info.log,
tests.log, bench.log, graphs.log, reproduce.log, benchmarks.csv, cuda-graph-conv.csv, reproduce/ (results.md, results.json) and
summary.txt (the GPU, torch, and each step's status and seconds). A step that fails or runs out of
time does not stop the later ones; the exit status is 1 if any did. Without a GPU (or with a CPU
build of torch, or without nvcc) it says so and exits 1 before building anything. --dry-run prints
the steps (for the GPU present, else placeholders) and runs nothing.
"""

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from report import RESULTS, machine_name  # noqa: E402

# The 8 minutes split between the steps (a budget: no GPU has run this script yet).
STEP_SECONDS = {"build": 150, "info": 10, "tests": 120, "bench": 120, "graphs": 30, "reproduce": 50}
BENCH_ROUNDS = 3


def missing_requirement() -> str | None:
    """Why this machine cannot run the check, or None."""
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU build; gpu-check needs a CUDA build of torch "
            "(ROBUSTKERNELS_TORCH_INDEX selects the package index run.sh installs from)"
        )
    if not torch.cuda.is_available():
        return "no CUDA GPU here (torch.cuda.is_available() is False); gpu-check needs a machine with an NVIDIA GPU"
    if shutil.which("nvcc") is None:
        return (
            "nvcc not found on PATH; gpu-check builds the CUDA kernels and needs the CUDA toolkit's compiler"
        )
    return None


def gpu_arch() -> str:
    """TORCH_CUDA_ARCH_LIST for the GPU present: its compute capability, e.g. "9.0"."""
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def steps(gpu: str, arch: str, out: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, command, extra environment) of each step, in order."""
    python = sys.executable
    build_env = {
        "TORCH_CUDA_ARCH_LIST": arch,
        "ROBUSTKERNELS_CUDA": "1",
        "MAX_JOBS": str(os.cpu_count() or 1),
    }
    return [
        ("build", [python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "-e", str(ROOT)], build_env),
        ("info", [python, "-m", "robustkernels.info"], {}),
        ("tests", [python, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "-m", "cuda or triton"], {}),
        (
            "bench",
            [python, str(HERE / "report.py"), "--rounds", str(BENCH_ROUNDS), "--machine", gpu, "--out", str(out / "benchmarks.csv")],
            {},
        ),
        ("graphs", [python, str(HERE / "cuda_graph_conv.py"), "--out", str(out / "cuda-graph-conv.csv")], {}),
        (
            "reproduce",
            [python, "-m", "robustkernels.api.cli", "reproduce", "float", "--budget", "smoke", "--device", "cuda",
             "--out", str(out / "reproduce"), "--no-progress"],
            {},
        ),
    ]  # fmt: skip


def run_step(command: list[str], env: dict[str, str], log: Path, seconds: int) -> str:
    """Runs `command` with its output in `log`; "ok", "failed (exit N)" or "timed out after N s".
    Its own process group, so that a timeout also ends the processes it started."""
    with log.open("w") as handle:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return f"timed out after {seconds} s"
    return "ok" if code == 0 else f"failed (exit {code})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    parser.add_argument(
        "--out", type=Path, help="the folder for logs and results (default: benchmarks/results/<gpu>)"
    )
    args = parser.parse_args(argv)

    reason = missing_requirement()
    if reason is not None and not args.dry_run:
        print(f"gpu-check: {reason}", file=sys.stderr)
        return 1
    gpu, arch = (machine_name(), gpu_arch()) if reason is None else ("<gpu>", "<major.minor>")
    out = args.out or RESULTS / gpu
    plan = steps(gpu, arch, out)
    if args.dry_run:
        if reason is not None:
            print(f"gpu-check --dry-run: {reason}; the steps with placeholders:")
        for name, command, env in plan:
            settings = " ".join(f"{key}={value}" for key, value in env.items())
            print(
                f"{name} (limit {STEP_SECONDS[name]} s): {settings + ' ' if settings else ''}{shlex.join(command)}"
            )
        print(f"output: {out}")
        return 0

    out.mkdir(parents=True, exist_ok=True)
    summary = [
        f"gpu: {torch.cuda.get_device_name()} (compute capability {arch})",
        f"torch {torch.__version__}, CUDA {torch.version.cuda}",
    ]
    print("\n".join(summary))
    failed = False
    for name, command, env in plan:
        started = time.perf_counter()
        status = run_step(command, env, out / f"{name}.log", STEP_SECONDS[name])
        line = f"{name}: {status} in {time.perf_counter() - started:.0f} s (log: {out / f'{name}.log'})"
        print(line, flush=True)
        summary.append(line)
        failed |= status != "ok"
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print(f"gpu-check: {'some steps failed' if failed else 'all steps passed'}; results in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
