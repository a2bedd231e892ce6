"""The bad-argument table's machinery: bad arguments raise clear errors naming the argument,
from Python and from C++, and never crash.

The table holds, for every op registered in the torch.ops.robustkernels namespace (the C++
kernel ops and the custom ops), valid arguments and bad variants of them, each with the
exception it must raise and a pattern its message must contain (the argument's name);
a variant whose error is None must be accepted (an empty batch, a non-contiguous
input). Each op family's cases live beside its checks in tests/test_bad_inputs_<stem>.py
(the stem of robustkernels/ops/<stem>.py or of the op's other sources), in a dict CASES
{op name: function(op, device, cases) appending the op's cases}; tests/test_bad_inputs.py
checks that every registered op has cases.

The cases run in a child process so that a crash (segfault, abort) fails its case
instead of killing pytest: one child runs the whole table (every family's cases) and,
after a crash, a new one resumes after the crashing case. The custom ops run the table
once per backend (the default choice, Triton, the reference), since each backend reads
memory its own way. The same table runs on CUDA tensors when a GPU is present; there the
wrong-device cases put one argument on the CPU.
"""

import faulthandler
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from helpers import require_backend

import robustkernels  # noqa: F401  (registers the ops)

HERE = Path(__file__).resolve().parent
# (device, backend): "" is the default choice (ROBUSTKERNELS_BACKEND unset)
SETTINGS = [(device, backend) for device in ("cpu", "cuda") for backend in ("", "triton", "reference")]
CHILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    op: str
    label: str
    args: dict
    error: type[Exception] | None
    match: str | None


class Builder:
    """Collects one op's cases: `good` are valid keyword arguments, each case overrides some."""

    def __init__(self, op: str, device: str, cases: list[Case], good: dict):
        self.op, self.device, self.cases, self.good = op, device, cases, good
        # a kernel op without a fake (Meta kernel): a meta tensor finds no kernel to run
        self.kernel = op.endswith("_kernel") and not torch._C._dispatch_has_kernel_for_dispatch_key(
            f"robustkernels::{op}", "Meta"
        )

    def bad(self, label: str, error: type[Exception] | None, match: str | None = None, **changes) -> None:
        if error is not None and match is None:
            (match,) = changes  # the message names the one changed argument
        self.cases.append(Case(self.op, label, {**self.good, **changes}, error, match))

    def accepts(self, label: str, **changes) -> None:
        self.bad(label, None, None, **changes)

    def elsewhere(self, name: str, value: torch.Tensor) -> None:
        """`name` on another device: a meta tensor beside CPU ones (the dispatcher sends the call to
        the Meta key, where a kernel op has no kernel and a custom op runs its checking fake), or a
        CPU tensor beside CUDA ones (the CUDA launcher's device check)."""
        if self.device == "cpu":
            other = value.to("meta")
            error, match = (NotImplementedError, "Meta") if self.kernel else (ValueError, name)
        else:
            other, error, match = value.cpu(), ValueError, name
        self.bad(f"{name} on another device", error, match, **{name: other})


def randn(device, *shape, dtype=torch.float32):
    generator = torch.Generator().manual_seed(sum(shape) + len(shape))
    return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values in a transposed layout (not contiguous for rank >= 2)."""
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def bank(device, paths=3):
    """(weight, mask, alpha) banks of `paths` 4x3x3x3 conv weights, for the path ops."""
    generator = torch.Generator().manual_seed(paths)
    weight = torch.randn(paths, 4, 3, 3, 3, generator=generator).to(device)
    mask = (torch.rand(paths, 4, 3, 3, 3, generator=generator) > 0.3).to(device)
    alpha = (0.1 + torch.rand(paths, 4, generator=generator)).to(device)
    return weight, mask, alpha


# Inputs of the functional layer's checks (tests/test_bad_inputs_<stem>.py::test_functional_*).
W = torch.randn(4, 3, 3, 3)
A = torch.full((1,), 0.25)
X = torch.randn(2, 3, 8, 8)
BANK = torch.randn(3, 4, 3, 3, 3)

Builders = dict[str, Callable[[str, str, list[Case]], None]]


@cache
def table_builders() -> Builders:
    """Every family's CASES, joined: {op name: the function appending its cases}."""
    joined: Builders = {}
    for path in sorted(HERE.glob("test_bad_inputs_*.py")):
        family = importlib.import_module(path.stem).CASES
        twice = set(family) & set(joined)
        assert not twice, f"{path.name} repeats the cases of {sorted(twice)}"
        joined |= family
    return joined


def registered_ops() -> list[str]:
    prefix = "robustkernels::"
    names = torch._C._dispatch_get_all_op_names()
    return sorted(name.removeprefix(prefix) for name in names if name.startswith(prefix))


@cache
def table(device: str) -> list[Case]:
    builders, cases = table_builders(), []
    for op in sorted(builders):
        builders[op](op, device, cases)
    return cases


def _run_case(case: Case) -> dict:
    try:
        getattr(torch.ops.robustkernels, case.op)(**case.args)
    except Exception as error:
        return {"raised": [cls.__name__ for cls in type(error).__mro__], "message": str(error)}
    return {"raised": None}


def run_cases(device: str, start: int) -> None:
    """Child process: runs the cases from `start` on, one JSON line before and after each."""
    faulthandler.enable()
    for index, case in enumerate(table(device)[start:], start):
        print(json.dumps({"started": index}), flush=True)
        print(json.dumps({"index": index, **_run_case(case)}), flush=True)


_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); import bad_inputs; bad_inputs.run_cases(sys.argv[2], int(sys.argv[3]))"


@cache
def outcomes(device: str, backend: str) -> dict[int, dict]:
    """Every case's outcome, from child processes; a crashed or hung case gets {"crashed": why}."""
    total, results, start = len(table(device)), {}, 0
    while start < total:
        command = [sys.executable, "-c", _CHILD, str(HERE), device, str(start)]
        try:
            child = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
                env={**os.environ, "ROBUSTKERNELS_BACKEND": backend},
            )
            code = child.returncode
            why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            stdout = child.stdout
        except subprocess.TimeoutExpired as expired:
            stdout, child = expired.stdout or "", None
            stdout, why = (
                stdout.decode() if isinstance(stdout, bytes) else stdout,
                f"no result in {CHILD_TIMEOUT_S} s",
            )
        last_started = start
        for line in stdout.splitlines():
            record = json.loads(line)
            if "started" in record:
                last_started = record["started"]
            else:
                results[record["index"]] = record
        if child is not None and child.returncode == 0 and len(results) == total:
            break
        stderr = child.stderr[-4000:] if child is not None else ""
        results[last_started] = {"index": last_started, "crashed": f"{why}\n{stderr}"}
        start = last_started + 1
    return results


def _failure(case: Case, outcome: dict) -> str | None:
    where = f"{case.op} [{case.label}]"
    if "crashed" in outcome:
        return f"{where} crashed: {outcome['crashed']}"
    raised = outcome["raised"]
    if case.error is None:
        return (
            None
            if raised is None
            else f"{where} should be accepted, raised {raised[0]}: {outcome['message']}"
        )
    if raised is None:
        return f"{where} returned instead of raising {case.error.__name__}"
    if case.error.__name__ not in raised or case.match not in outcome["message"]:
        return f"{where} should raise {case.error.__name__} naming {case.match!r}, raised {raised[0]}: {outcome['message']}"
    return None


def settings(builders: Builders) -> list:
    """(op, device, backend) for every registered op of `builders`; a kernel op has no backend
    to choose."""
    return [
        pytest.param(op, device, backend, id=f"{device}-{backend or 'default'}-{op}")
        for op in registered_ops()
        if op in builders
        for device, backend in SETTINGS
        if not (op.endswith("_kernel") and backend)
    ]


def check_op(op: str, device: str, backend: str) -> None:
    """Every case of `op` raised what it must (or was accepted) in the child of (device, backend)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device: the table runs on CPU tensors only")
    if op.endswith("_kernel"):
        dispatch_key = "CPU" if device == "cpu" else "CUDA"
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"robustkernels::{op}", dispatch_key):
            pytest.skip(
                f"robustkernels::{op} has no {dispatch_key} kernel (robustkernels._C built without it)"
            )
    elif backend:
        require_backend(backend, device)
    cases = table(device)
    indices = [i for i, case in enumerate(cases) if case.op == op]
    assert indices, f"no cases for {op}"
    results = outcomes(device, backend)
    failures = [f for f in (_failure(cases[i], results[i]) for i in indices) if f]
    assert not failures, "\n".join(failures)
