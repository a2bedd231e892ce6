"""A regular (non-editable) install works: a wheel built from the tracked sources, installed into a
fresh virtual environment, runs the command line and the info module from outside the checkout.

The fresh environment gets the dependencies (torch, NumPy, scikit-learn, ...) from this one's
site-packages through a .pth file, so nothing is downloaded; pip installs the wheel with --no-index
and finds install_requires satisfied there. Only that directory is added to sys.path, and .pth files
inside it are not read, so this checkout's editable install does not shadow the wheel.

The wheel is pure Python (ROBUSTKERNELS_BUILD_EXT=0): compiling the C++ extension again takes minutes
on a CI machine, and it is built and tested by the editable install every CI run does (run.sh); what
this test checks is what only a regular install shows: the package list, the entry point and the
requirements. Select it with `-m packaging`.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["setup.py", "pyproject.toml", "README.md", "robustkernels", "python_api", "csrc"]


def _run(command, cwd, env=None):
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {completed.returncode}:\n"
        f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    )
    return completed.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv holding only the wheel, a working directory outside the checkout)."""
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"  # a copy, so the build writes nothing into the checkout
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(path, source / name)
    env = {**os.environ, "ROBUSTKERNELS_BUILD_EXT": "0", "PIP_NO_INDEX": "1"}
    wheels = tmp / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", wheels, source],
        tmp,
        env,
    )
    (wheel,) = wheels.glob("robustkernels-*.whl")

    environment = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)  # this pip installs into it (--python)
    python = environment / "bin" / "python"
    site_packages = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp).strip()
    )
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", wheel], tmp, env)
    work = tmp / "elsewhere"
    work.mkdir()
    return python, work


def test_the_wheel_is_what_runs(installed):
    python, work = installed
    where = _run(
        [python, "-c", "import robustkernels, robustkernels.api.reproduce; print(robustkernels.__file__)"],
        work,
    )
    assert Path(where.strip()).is_relative_to(python.parent.parent), where
    assert not Path(where.strip()).is_relative_to(ROOT), where


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["bin/robustkernels", "--help"], "reproduce"),
        (["bin/robustkernels", "reproduce", "--help"], "--budget"),
        (["bin/python", "-m", "robustkernels.info"], "backend"),
    ],
    ids=["cli", "reproduce", "info"],
)
def test_commands_run_from_the_wheel(installed, command, expected):
    python, work = installed
    prefix = python.parent.parent
    output = _run([prefix / command[0], *command[1:]], work)
    assert expected in output
