"""Bad arguments of the backend's kernel switch (robustkernels/ops/backend.py, csrc/kernel_choice.h).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend).
"""

import pytest
from bad_inputs import Builder, check_op, settings

import robustkernels


def _set_python_kernels(op, device, cases):
    # device-independent: the process-wide switch of csrc/kernel_choice.h, left as the backend has it
    Builder(op, device, cases, {"on": robustkernels.ops.backend.explicit_choice() is not None}).accepts("on")


CASES = {
    "set_python_kernels": _set_python_kernels,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)
