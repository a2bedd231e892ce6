"""Bad arguments of the noisy / masked weight transform ops (robustkernels/ops/noisy_weight.py,
csrc/ops/noisy_weight.cpp).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import A, Builder, W, check_op, noncontiguous, randn, settings

from robustkernels import functional as F


def _noisy_weight_cases(b: Builder, weight_name: str) -> None:
    w, a = b.good[weight_name], b.good["alpha"]
    b.bad("integer weight", TypeError, **{weight_name: w.long()})
    b.bad("float8 weight", TypeError, **{weight_name: w.to(torch.float8_e4m3fn)})
    b.bad("empty weight", ValueError, **{weight_name: w[:0]})
    b.bad("0-d weight", ValueError, **{weight_name: w.sum()})
    b.bad("alpha dtype", TypeError, alpha=a.double())
    b.bad("alpha with 3 values for 4 channels", ValueError, alpha=torch.ones(3, device=b.device))
    b.bad("alpha of shape [4, 3]", ValueError, alpha=torch.ones(4, 3, device=b.device))
    b.bad("empty alpha", ValueError, alpha=a[:0])
    b.elsewhere("alpha", a)
    b.bad("float mask", TypeError, mask=torch.ones_like(w))
    b.bad("mask shape", ValueError, mask=torch.ones(4, 3, 3, dtype=torch.bool, device=b.device))
    b.elsewhere("mask", torch.ones_like(w, dtype=torch.bool))
    b.bad("negative seed", ValueError, seed=-1)
    b.accepts(
        "non-contiguous weight and channel alpha", **{weight_name: noncontiguous(w)}, alpha=a.expand(4, 1)
    )
    b.accepts("non-contiguous mask", mask=noncontiguous(torch.rand_like(w) > 0.5))


def _noisy_weight(op, device, cases):
    good = {"weight": randn(device, 4, 3, 3, 3), "alpha": torch.full((1,), 0.25, device=device)}
    b = Builder(op, device, cases, {**good, "lam": 1.0, "seed": 0, "mask": None})
    _noisy_weight_cases(b, "weight")


def _noisy_weight_backward(op, device, cases):
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    good = {grad_name: randn(device, 4, 3, 3, 3), "alpha": torch.full((1,), 0.25, device=device)}
    sigma = torch.tensor(0.5, device=device)
    good |= {"sigma": sigma, "lam": 1.0, "seed": 0, "mask": None, "need_alpha_grad": True}
    b = Builder(op, device, cases, good)
    _noisy_weight_cases(b, grad_name)
    b.bad("sigma with 2 values", ValueError, sigma=torch.ones(2, device=device))
    b.bad("integer sigma", TypeError, sigma=sigma.long())
    b.elsewhere("sigma", sigma)


CASES = {
    "noisy_weight_fwd_kernel": _noisy_weight,
    "noisy_weight": _noisy_weight,
    "noisy_weight_bwd_kernel": _noisy_weight_backward,
    "noisy_weight_backward": _noisy_weight_backward,
    "noisy_weight_fwd_python": _noisy_weight,
    "noisy_weight_bwd_python": _noisy_weight_backward,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight": W.long()}, TypeError, "weight"),
        ({"weight": torch.empty(0, 3, 3, 3)}, ValueError, "weight"),
        ({"weight": torch.tensor(1.0)}, ValueError, "weight"),
        ({"weight": [1.0, 2.0]}, TypeError, "weight"),
        ({"alpha": A.double()}, TypeError, "alpha"),
        ({"alpha": torch.ones(3)}, ValueError, "alpha"),
        ({"alpha": torch.ones(4, 3)}, ValueError, "alpha"),
        ({"mask": torch.ones(4, 3, 3, 3)}, TypeError, "mask"),
        ({"mask": torch.ones(4, 3, 3, dtype=torch.bool)}, ValueError, "mask"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**63}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"lam": "1"}, TypeError, "lam"),
    ],
)
def test_noisy_weight_bad_arguments(kwargs, error, name):
    args = {"weight": W, "alpha": A, "lam": 1.0, "seed": 0, "mask": None, **kwargs}
    with pytest.raises(error, match=name):
        F.noisy_weight(args.pop("weight"), args.pop("alpha"), **args)


def test_device_mismatch_is_named():
    meta_alpha = torch.empty(1, device="meta")
    with pytest.raises(ValueError, match="alpha"):
        F.noisy_weight(W, meta_alpha, lam=1.0, seed=0)
