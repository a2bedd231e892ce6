"""Runs a worker script as a two-process gloo job under torchrun, as a user would launch one."""

import os
import subprocess
import sys
from pathlib import Path


def run_two_processes(script: str, work_dir: Path, out: Path) -> None:
    """Writes `script` to `work_dir` and runs it as `worker.py out` in two processes.

    The worker may import the tests' modules. A nonzero exit of either process fails the test:
    a job that trains and then aborts on teardown is broken for its user.
    """
    path = work_dir / "worker.py"
    path.write_text(script)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run(
        [*command, str(path), str(out)], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
