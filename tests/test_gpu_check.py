"""The CPU-checkable parts of `./run.sh gpu-check` (benchmarks/gpu_check.py): without a GPU it says
so and fails; its plan has every step within 8 minutes; a step's failure and time limit are
recorded (the limit ending the processes the step started); the short benchmark run writes its
CSV where it is told. Select with `-m gpu_check`."""

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

pytestmark = pytest.mark.gpu_check


def _run(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *args], capture_output=True, text=True
    )


@pytest.mark.skipif(gpu_check.missing_requirement() is None, reason="this machine can run gpu-check")
def test_without_a_gpu_it_says_so_and_exits_1():
    completed = _run()
    assert completed.returncode == 1
    assert completed.stderr.startswith("gpu-check: ") and gpu_check.missing_requirement() in completed.stderr


def test_run_sh_lists_gpu_check():
    usage = subprocess.run(["bash", str(ROOT / "run.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "./run.sh gpu-check" in usage.stdout


def test_the_plan_has_every_step_within_8_minutes(tmp_path):
    completed = _run("--dry-run", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert sum(gpu_check.STEP_SECONDS.values()) <= 8 * 60
    plan = {line.split(" ")[0]: line for line in lines if "(limit " in line}
    assert list(plan) == list(gpu_check.STEP_SECONDS)
    assert "TORCH_CUDA_ARCH_LIST=" in plan["build"] and "ROBUSTKERNELS_CUDA=1" in plan["build"]
    assert "-m 'cuda or triton'" in plan["tests"]
    assert (
        f"--rounds {gpu_check.BENCH_ROUNDS}" in plan["bench"]
        and str(tmp_path / "benchmarks.csv") in plan["bench"]
    )
    assert "reproduce float --budget smoke --device cuda" in plan["reproduce"]


def test_a_step_records_failure_and_its_time_limit_ends_what_it_started(tmp_path):
    failing = [sys.executable, "-c", "print('some output'); raise SystemExit(3)"]
    assert gpu_check.run_step(failing, {}, tmp_path / "failing.log", 60) == "failed (exit 3)"
    assert "some output" in (tmp_path / "failing.log").read_text()
    pid_file = tmp_path / "child.pid"
    sleeping = [
        sys.executable, "-c",
        "import subprocess, sys; child = subprocess.Popen(['sleep', '60']); "
        "open(sys.argv[1], 'w').write(str(child.pid)); child.wait()",
        str(pid_file),
    ]  # fmt: skip
    assert gpu_check.run_step(sleeping, {}, tmp_path / "sleeping.log", 5) == "timed out after 5 s"
    child = int(pid_file.read_text())
    for _ in range(50):
        if not _running(child):
            return
        time.sleep(0.1)
    pytest.fail(f"the step's child process {child} outlived the time limit")


def _running(pid: int) -> bool:
    """Whether `pid` still runs: gone, or a zombie (killed, left for an init that may not reap), is not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_short_benchmark_run_writes_its_csv(tmp_path):
    out = tmp_path / "results" / "benchmarks.csv"
    selection = (
        "test_pgd_step and 128x3x32x32 and linf and not compiled"  # inductor's CPU build takes a minute
    )
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "report.py"), "--rounds", "1", "-k", selection, "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    rows = list(csv.reader(out.read_text().splitlines()))
    header = dict(zip(rows[0][::2], rows[0][1::2], strict=True))
    assert header["rounds"] == "1"
    timed = {(row[1], row[4]) for row in rows[2:] if row[0] == "timing"}
    assert {("pgd_step", "robustkernels"), ("pgd_step", "reference_eager")} <= timed
