"""Bad arguments of the Philox normal fill (csrc/philox.h, robustkernels/reference/philox.py).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import Builder, check_op, settings

from robustkernels import functional as F


def _philox_normal_kernel(op, device, cases):
    b = Builder(op, device, cases, {"like": torch.empty(3, device=device), "seed": 0, "offset": 0})
    b.bad("negative offset", ValueError, offset=-1)
    b.bad("offset + numel past int64", ValueError, offset=2**63 - 2)
    b.bad("negative seed", ValueError, seed=-1)
    b.accepts("empty like", like=torch.empty(0, device=device))
    b.accepts("non-contiguous like", like=torch.empty(4, 3, device=device).t())


CASES = {
    "philox_normal_kernel": _philox_normal_kernel,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.philox_normal([1.0], seed=0), TypeError, "like"),
        (lambda: F.philox_normal(torch.empty(3), seed=0, offset=-1), ValueError, "offset"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
