"""Bad arguments of the PGD step ops (robustkernels/ops/pgd_step.py).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import Builder, X, check_op, noncontiguous, randn, settings

from robustkernels import functional as F


def _pgd_step(op, device, cases):
    x = randn(device, 2, 3, 4, 4)
    step = torch.full((2,), 0.1, device=device)
    good = {"x_adv": x, "grad": randn(device, 2, 3, 4, 5)[..., :4], "x_orig": x.clone(), "step": step}
    b = Builder(
        op, device, cases, {**good, "eps": 0.3, "norm": "linf", "lo": 0.0, "hi": 1.0, "normalize": True}
    )
    b.bad("integer x_adv", TypeError, x_adv=x.long())
    b.bad("0-d x_adv", ValueError, x_adv=x.sum())
    b.bad("grad dtype", TypeError, grad=x.double())
    b.bad("x_orig shape", ValueError, x_orig=x[:, :2])
    b.elsewhere("x_orig", x)
    b.bad("step with 3 values", ValueError, step=torch.ones(3, device=device))
    b.bad("integer step", TypeError, step=step.long())
    b.elsewhere("step", step)
    b.bad("negative eps", ValueError, eps=-0.1)
    b.bad("unknown norm", ValueError, norm="l1")
    b.bad("lo > hi", ValueError, "lo", lo=1.0, hi=0.0)
    b.accepts("empty batch", x_adv=x[:0], grad=x[:0], x_orig=x[:0], step=step[:0])
    b.accepts("non-contiguous grad", grad=noncontiguous(x))


def _pgd_step_backward(op, device, cases):
    x = randn(device, 2, 3, 4, 4)
    step = torch.full((2,), 0.1, device=device)
    good = {"grad_out": randn(device, 2, 3, 4, 4), "x_adv": x, "grad": randn(device, 2, 3, 4, 4)}
    good |= {"x_orig": x.clone(), "step": step, "eps": 0.3, "norm": "l2", "lo": 0.0, "hi": 1.0}
    b = Builder(op, device, cases, {**good, "normalize": True, "output_mask": [True, True, True, True]})
    b.bad("grad_out shape", ValueError, grad_out=x[:, :2])
    b.bad("grad dtype", TypeError, grad=x.double())
    b.elsewhere("x_orig", x)
    b.bad("step with 3 values", ValueError, step=torch.ones(3, device=device))
    b.bad("unknown norm", ValueError, norm="l1")
    b.accepts("only d step", output_mask=[False, False, False, True])
    b.accepts("empty batch", grad_out=x[:0], x_adv=x[:0], grad=x[:0], x_orig=x[:0], step=step[:0])


CASES = {
    "pgd_step_fwd_kernel": _pgd_step,
    "pgd_step": _pgd_step,
    "pgd_step_fwd_python": _pgd_step,
    "pgd_step_backward": _pgd_step_backward,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.pgd_step(X, X, X, step=torch.ones(2, device="meta"), eps=0.1), ValueError, "step"),
        (lambda: F.pgd_step(X, X[:1], X, step=0.1, eps=0.1), ValueError, "grad"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
