"""The routed layers' weight transform and route sort (path_weights, route_sort): the Triton
kernels against the C++ ones, the sort's stability and tiles, and the C++ kernels' own checks."""

import pytest
import torch
from helpers import TOLERANCE, require_backend, targets
from path_banks import make_bank, random_route

import robustkernels
from robustkernels import functional as F
from robustkernels.ops import path_weights as path_ops

TARGETS = targets("cpp", "reference", "triton")  # no CUDA C++ kernel: Triton serves GPUs


@pytest.mark.parametrize("target", TARGETS)
def test_route_sort_is_stable(target):
    route = random_route(50, 5, torch.int32, seed=7)
    route[route == 3] = 1  # path 3 empty
    with robustkernels.use_backend(target.backend):
        counts, perm = F.route_sort(*target.to(route), 5)
    assert torch.equal(counts.cpu(), torch.bincount(route.long(), minlength=5))
    assert torch.equal(perm.cpu(), torch.argsort(route, stable=True))


def test_cpp_kernels_reject_bad_inputs():
    require_backend("cpp")
    ops = torch.ops.robustkernels
    weight, _, mask, alpha = make_bank((4, 3, 3, 3), 3)
    cases = [
        (lambda: ops.route_sort_kernel(torch.tensor([0, 5]), 3), ValueError, r"route values must lie in \[0, 3\)"),
        (lambda: ops.route_sort_kernel(torch.tensor([0.0]), 3), TypeError, "route must be an int32 or int64"),
        (lambda: ops.route_sort_kernel(torch.zeros(2, 2, dtype=torch.long), 3), ValueError, "route must be 1-D"),
        (lambda: ops.path_weights_fwd_kernel(weight, mask, alpha, [1.0] * 2, [0] * 2, None), ValueError, "weight must hold"),
        (lambda: ops.path_weights_fwd_kernel(weight, mask, alpha, [1.0] * 3, [0] * 2, None), ValueError, "seeds must hold"),
        (lambda: ops.path_weights_fwd_kernel(weight, mask[:, :2], alpha, [1.0] * 3, [0] * 3, None), ValueError, "mask must have shape"),
        (lambda: ops.path_weights_fwd_kernel(weight, None, None, [1.0] * 3, [0] * 3, None), ValueError, "alpha is required"),
        (lambda: ops.path_weights_fwd_kernel(weight, None, alpha[:, :2], [1.0] * 3, [0] * 3, None), ValueError, "alpha must hold"),
        (lambda: ops.path_weights_fwd_kernel(weight.int(), None, None, [0.0] * 3, [0] * 3, None), TypeError, "weight must be a floating"),
        (lambda: ops.path_weights_fwd_kernel(weight, None, None, [0.0] * 3, [0] * 3, torch.ones(2, dtype=torch.long)), ValueError, "counts must be"),
        (lambda: ops.path_weights_bwd_kernel(weight, 2, None, None, torch.zeros(2), [0.0] * 3, [0] * 3, None, False), ValueError, "entries must be"),
    ]  # fmt: skip
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("target", targets("triton"))
def test_triton_path_weights_equal_cpp_kernel(target):
    """Every path's W' and the weight backward agree with the C++ kernels, inactive paths included."""
    require_backend("cpp")
    weight, _, mask, alpha = make_bank((6, 5, 3, 3), 4, alpha_kind="channel")
    lams, seeds = [0.0, 0.7, 1.1, 0.4], [1, 2, 3, 4]
    counts = torch.tensor([3, 0, 2, 1])
    cpp = torch.ops.robustkernels.path_weights_fwd_kernel(weight, mask, alpha, lams, seeds, counts)
    with robustkernels.use_backend("triton"):
        tri = path_ops.path_weights(*target.to(weight, mask, alpha), lams, seeds, *target.to(counts))
    for t, c in zip(tri, cpp, strict=True):
        torch.testing.assert_close(t.cpu(), c, **TOLERANCE[torch.float32])
    grad = torch.randn(4, 6, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    cpp_grads = torch.ops.robustkernels.path_weights_bwd_kernel(
        grad, 4, mask, alpha, cpp[1], lams, seeds, counts, True
    )
    with robustkernels.use_backend("triton"):
        tri_grads = path_ops.path_weights_backward(
            *target.to(grad), 4, *target.to(mask, alpha, cpp[1]), lams, seeds, *target.to(counts), True
        )
    for t, c in zip(tri_grads, cpp_grads, strict=True):
        torch.testing.assert_close(t.cpu(), c, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("batch", [0, 1, 37])
@pytest.mark.parametrize("target", targets("triton"))
def test_triton_route_sort_tiles_equal_stable_argsort(monkeypatch, target, batch):
    """Tiles of 16 x 4: the loops over sample tiles run several times."""
    monkeypatch.setattr(path_ops, "_SORT_TILE", 64)
    route = random_route(batch, 3, torch.int32, seed=9)
    with robustkernels.use_backend("triton"):
        counts, perm = F.route_sort(*target.to(route), 3)
    assert torch.equal(counts.cpu(), torch.bincount(route.long(), minlength=3))
    assert torch.equal(perm.cpu(), torch.argsort(route, stable=True))


@pytest.mark.parametrize("target", TARGETS)
def test_route_out_of_range_is_reported(target):
    (route,) = target.to(torch.tensor([0, 2, 1]))
    with (
        robustkernels.use_backend(target.backend),
        pytest.raises(ValueError, match=r"route values must lie in \[0, 2\)"),
    ):
        F.route_sort(route, 2)
