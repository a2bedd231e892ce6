"""Bad arguments of the path weight and route sort ops (robustkernels/ops/path_weights.py, csrc/ops/path_weights.cpp).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import BANK, Builder, bank, check_op, noncontiguous, settings

from robustkernels import functional as F


def _path_weight_cases(b: Builder, weight_name: str) -> None:
    weight, mask, alpha = b.good[weight_name], b.good["mask"], b.good["alpha"]
    b.bad("integer weight", TypeError, **{weight_name: weight.int()})
    b.bad("1-D weight", ValueError, **{weight_name: weight[0, 0, 0, 0]})
    b.bad("weight with 2 entries for 3 paths", ValueError, **{weight_name: weight[:2]})
    b.bad("no lams", ValueError, "lams", lams=[], seeds=[])
    b.bad("seeds length", ValueError, seeds=[0, 1])
    b.bad("negative seed", ValueError, "seed", seeds=[0, -1, 2])
    b.bad("float mask", TypeError, mask=mask.float())
    b.bad("mask shape", ValueError, mask=mask[:, :2])
    b.elsewhere("mask", mask)
    b.bad("no alpha with noise", ValueError, "alpha", alpha=None)
    b.bad("alpha dtype", TypeError, alpha=alpha.double())
    b.bad("alpha with 2 values per path", ValueError, alpha=alpha[:, :2])
    b.bad("alpha rows", ValueError, alpha=alpha[:2])
    b.elsewhere("alpha", alpha)
    counts = torch.ones(3, dtype=torch.int64, device=b.device)
    b.bad("counts length", ValueError, counts=counts[:2])
    b.bad("int32 counts", TypeError, "counts", counts=counts.int())
    b.elsewhere("counts", counts)
    b.accepts("non-contiguous weight", **{weight_name: noncontiguous(weight)})


def _path_weights(op, device, cases):
    weight, mask, alpha = bank(device)
    good = {"weight": weight, "mask": mask, "alpha": alpha, "lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2]}
    b = Builder(op, device, cases, {**good, "counts": None})
    _path_weight_cases(b, "weight")
    b.accepts("one shared weight", weight=weight[:1])


def _path_weights_backward(op, device, cases):
    grad, mask, alpha = bank(device)
    grad_name = "grad_out" if op.endswith(("_kernel", "_python")) else "grad"
    sigma = torch.ones(3, device=device)
    good = {grad_name: grad, "entries": 3, "mask": mask, "alpha": alpha, "sigma": sigma}
    good |= {"lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2], "counts": None, "need_alpha_grad": True}
    b = Builder(op, device, cases, good)
    _path_weight_cases(b, grad_name)
    b.bad("grad with one entry for 3 paths", ValueError, **{grad_name: grad[:1]})
    b.bad("entries", ValueError, entries=2)
    b.bad("sigma length", ValueError, sigma=sigma[:2])
    b.bad("integer sigma", TypeError, sigma=sigma.long())
    b.elsewhere("sigma", sigma)
    b.accepts("shared entry", entries=1, sigma=sigma[:1])


def _route_sort(op, device, cases):
    route = torch.tensor([0, 2, 1, 2], device=device)
    b = Builder(op, device, cases, {"route": route, "num_paths": 3})
    b.bad("float route", TypeError, route=route.float())
    b.bad("2-D route", ValueError, route=route.reshape(2, 2))
    b.bad("no paths", ValueError, num_paths=0)
    if b.kernel:  # the custom op leaves out-of-range samples unsorted; its callers check the counts
        b.bad("route past num_paths", ValueError, route=route + 3)
        b.bad("negative route", ValueError, route=route - 3)
    b.accepts("empty route", route=route[:0])
    b.accepts("non-contiguous route", route=torch.stack([route, route], dim=1)[:, 0])


CASES = {
    "path_weights_fwd_kernel": _path_weights,
    "path_weights": _path_weights,
    "path_weights_bwd_kernel": _path_weights_backward,
    "path_weights_backward": _path_weights_backward,
    "route_sort_kernel": _route_sort,
    "route_sort": _route_sort,
    "path_weights_fwd_python": _path_weights,
    "path_weights_bwd_python": _path_weights_backward,
    "route_sort_python": _route_sort,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.route_sort(torch.tensor([0, 5]), 3), ValueError, "route"),
        (lambda: F.route_sort(torch.tensor([0.0, 1.0]), 3), TypeError, "route"),
        (lambda: F.path_weights(BANK, mask_bank=torch.ones(3, 4, 3, 3, 3)), TypeError, "mask"),
        (lambda: F.path_weights(BANK, noise=(torch.ones(2), 1.0, 0)), ValueError, "alpha"),
        (lambda: F.path_weights([1.0]), TypeError, "weight_bank"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
