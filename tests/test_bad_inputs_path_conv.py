"""Bad arguments of the routed conv / linear layer ops (csrc/ops/path_conv.cpp).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import BANK, Builder, X, bank, check_op, randn, settings

from robustkernels import functional as F


def _path_layer_cases(b: Builder) -> None:
    x, route = b.good["x"], b.good["route"]
    b.bad("x dtype", TypeError, x=x.double())
    b.elsewhere("x", x)
    b.bad("float route", TypeError, route=route.float())
    b.bad("route length", ValueError, route=route[:2])
    b.bad("route past num_paths", ValueError, route=route + 3)
    b.elsewhere("route", route)
    b.bad("route and segments", ValueError, "segments", segments=[2, 1, 1])
    b.bad("segments not summing to the batch", ValueError, "segments", route=None, segments=[1, 1, 1])
    b.bad("bias rows", ValueError, bias=torch.ones(2, 4, device=b.device))
    b.bad("mask shape", ValueError, mask=b.good["mask"][:, :2])
    b.bad("no alpha with noise", ValueError, "alpha", alpha=None)
    b.accepts("segments", route=None, segments=[2, 1, 1])
    b.accepts("empty batch", x=x[:0], route=route[:0])


def _path_conv2d(op, device, cases):
    weight, mask, alpha = bank(device)
    x = randn(device, 4, 3, 6, 6)
    route = torch.tensor([0, 2, 1, 2], device=device)
    good = {"x": x, "weight": weight, "bias": None, "mask": mask, "alpha": alpha, "lams": [1.0, 0.5, 0.0]}
    good |= {"seeds": [0, 1, 2], "route": route, "segments": [], "stride": [1, 1], "padding": [1, 1]}
    b = Builder(op, device, cases, {**good, "dilation": [1, 1], "groups": 1})
    _path_layer_cases(b)
    b.bad("x channels", ValueError, "channels", x=x[:, :2])
    b.bad("groups", ValueError, "groups", groups=2)


def _path_linear(op, device, cases):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, 5, generator=generator).to(device)
    mask = (torch.rand(3, 4, 5, generator=generator) > 0.3).to(device)
    alpha = torch.full((3, 1), 0.5, device=device)
    x = randn(device, 4, 5)
    route = torch.tensor([0, 2, 1, 2], device=device)
    good = {"x": x, "weight": weight, "bias": None, "mask": mask, "alpha": alpha, "lams": [1.0, 0.5, 0.0]}
    b = Builder(op, device, cases, {**good, "seeds": [0, 1, 2], "route": route, "segments": []})
    _path_layer_cases(b)
    b.bad("x features", ValueError, "weight", x=x[:, :4])


def _path_backward_cases(b: Builder) -> None:
    grad_y, x, perm, counts = b.good["grad_y"], b.good["x"], b.good["perm"], b.good["counts"]
    b.bad("grad_y dtype", TypeError, grad_y=grad_y.double())
    b.bad("grad_y batch", ValueError, grad_y=grad_y[:2])
    b.elsewhere("grad_y", grad_y)
    b.bad("x dtype", TypeError, x=x.double())
    b.bad("float perm", TypeError, perm=perm.float())
    b.bad("perm length", ValueError, perm=perm[:2])
    b.bad("perm past the batch", ValueError, perm=perm + 4)
    b.elsewhere("perm", perm)
    b.bad("int32 counts", TypeError, counts=counts.int())
    b.bad("counts length", ValueError, counts=counts[:2])
    b.bad("counts not summing to the batch", ValueError, counts=counts + 1)
    b.elsewhere("counts", counts)
    b.bad("segments length", ValueError, "segments", perm=perm[:0], segments=[4])
    b.bad("needs length", ValueError, needs=[True])


def _path_conv2d_backward(op, device, cases):
    weight, mask, alpha = bank(device)
    x = randn(device, 4, 3, 6, 6)
    perm = torch.tensor([0, 2, 1, 3], device=device)
    counts = torch.tensor([1, 1, 2], device=device)
    good = {"grad_y": randn(device, 4, 4, 6, 6), "x": x, "weight": weight, "mask": mask, "alpha": alpha}
    good |= {"perm": perm, "counts": counts, "lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2], "segments": []}
    good |= {"bias_entries": 0, "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1}
    b = Builder(op, device, cases, {**good, "needs": [True, True, False, True]})
    _path_backward_cases(b)


def _path_linear_backward(op, device, cases):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, 5, generator=generator).to(device)
    mask = (torch.rand(3, 4, 5, generator=generator) > 0.3).to(device)
    alpha = torch.full((3, 1), 0.5, device=device)
    perm = torch.tensor([0, 2, 1, 3], device=device)
    counts = torch.tensor([1, 1, 2], device=device)
    good = {"grad_y": randn(device, 4, 4), "x": randn(device, 4, 5), "weight": weight, "mask": mask}
    good |= {"alpha": alpha, "perm": perm, "counts": counts, "lams": [1.0, 0.5, 0.0], "seeds": [0, 1, 2]}
    b = Builder(
        op, device, cases, {**good, "segments": [], "bias_entries": 0, "needs": [True, True, False, True]}
    )
    _path_backward_cases(b)


CASES = {
    "path_conv2d": _path_conv2d,
    "path_linear": _path_linear,
    "path_conv2d_backward": _path_conv2d_backward,
    "path_linear_backward": _path_linear_backward,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.path_conv2d(X, BANK, torch.tensor([0, 5])), ValueError, "route"),
        (lambda: F.path_conv2d(X, BANK, torch.tensor([0, 1], device="meta")), ValueError, "route"),
        (lambda: F.path_conv2d(X, BANK, torch.tensor([0, 1, 2])), ValueError, "route"),
        (lambda: F.path_linear(torch.randn(2, 5), torch.randn(3, 4, 6), [1, 1, 0]), ValueError, "weight"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
