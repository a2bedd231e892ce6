"""Bad arguments of the CPU instruction-set switch (csrc/cpu/cpu_isa.h, robustkernels/cpu_isa.py).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend).
"""

import pytest
from bad_inputs import Builder, check_op, settings


def _set_cpu_isa(op, device, cases):
    # device-independent: the process-wide CPU instruction-set path (csrc/cpu/cpu_isa.h)
    b = Builder(op, device, cases, {"isa": "best"})
    b.bad("unknown path", ValueError, isa="sse9")
    b.accepts("the best path")


def _no_arguments(op, device, cases):
    Builder(op, device, cases, {}).accepts("no arguments")


CASES = {
    "set_cpu_isa": _set_cpu_isa,
    "cpu_isa": _no_arguments,
    "supported_cpu_isas": _no_arguments,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)
