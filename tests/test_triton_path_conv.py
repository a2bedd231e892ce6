"""The Triton kernels of the routed multi-path layers (under the interpreter on machines without a GPU)."""

import pytest
import torch
from helpers import TOLERANCE, require_backend
from test_path_conv import LAMS, SEEDS, assert_all_close, grads_of, make_bank, make_x, random_route

import robustkernels
from robustkernels import functional as F
from robustkernels import reference
from robustkernels.ops import path_conv as path_ops

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _needs_triton():
    require_backend("triton", DEVICE)


def on_device(*tensors):
    return [t.to(DEVICE) for t in tensors]


@pytest.mark.parametrize("alpha_kind", ["layer", "channel", "element"])
@pytest.mark.parametrize("shared", [False, True], ids=["bank", "shared"])
def test_conv_matches_reference(alpha_kind, shared):
    weight, bias, mask, alpha = make_bank((6, 2, 3, 3), 3, shared=shared, alpha_kind=alpha_kind)
    x = make_x((6, 4, 6, 5))
    route = torch.tensor([2, 0, 2, 2, 0, 2])  # path 1 unused
    mask_d, route_d = on_device(mask, route)

    def ours(x, w, b, a):
        with robustkernels.use_backend("triton"):
            bank = w[0] if shared else w
            return F.path_conv2d(
                x, bank, route_d, bias_bank=b, mask_bank=mask_d, noise=(a, LAMS, SEEDS), padding=1, groups=2
            )

    def ref(x, w, b, a):
        return reference.path_conv2d(x, w, b, route, LAMS, SEEDS, a, mask, padding=1, groups=2)

    got = grads_of(ours, on_device(x, weight, bias, alpha))
    assert_all_close([g.cpu() for g in got], grads_of(ref, (x, weight, bias, alpha)))
    if not shared:
        assert torch.equal(got[2][1].cpu(), torch.zeros_like(weight[1]))


def test_path_weights_equal_cpp_kernel():
    """Every path's W' and the weight backward agree with the C++ kernels, inactive paths included."""
    require_backend("cpp")
    weight, _, mask, alpha = make_bank((6, 5, 3, 3), 4, alpha_kind="channel")
    lams, seeds = [0.0, 0.7, 1.1, 0.4], [1, 2, 3, 4]
    counts = torch.tensor([3, 0, 2, 1])
    cpp = torch.ops.robustkernels.path_weights_fwd_kernel(weight, mask, alpha, lams, seeds, counts)
    with robustkernels.use_backend("triton"):
        tri = path_ops.path_weights(*on_device(weight, mask, alpha), lams, seeds, counts.to(DEVICE))
    for t, c in zip(tri, cpp, strict=True):
        torch.testing.assert_close(t.cpu(), c, **TOLERANCE[torch.float32])
    grad = torch.randn(4, 6, 5, 3, 3)
    cpp_grads = torch.ops.robustkernels.path_weights_bwd_kernel(
        grad, 4, mask, alpha, cpp[1], lams, seeds, counts, True
    )
    with robustkernels.use_backend("triton"):
        tri_grads = path_ops.path_weights_backward(
            *on_device(grad), 4, *on_device(mask, alpha, cpp[1]), lams, seeds, counts.to(DEVICE), True
        )
    for t, c in zip(tri_grads, cpp_grads, strict=True):
        torch.testing.assert_close(t.cpu(), c, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("batch", [0, 1, 37])
def test_route_sort_equals_stable_argsort(monkeypatch, batch):
    """Tiles of 16 x 4: the loops over sample tiles run several times."""
    monkeypatch.setattr(path_ops, "_SORT_TILE", 64)
    route = random_route(batch, 3, torch.int32, seed=9)
    with robustkernels.use_backend("triton"):
        counts, perm = F.route_sort(route.to(DEVICE), 3)
    assert torch.equal(counts.cpu(), torch.bincount(route.long(), minlength=3))
    assert torch.equal(perm.cpu(), torch.argsort(route, stable=True))


def test_route_out_of_range_is_reported():
    with (
        robustkernels.use_backend("triton"),
        pytest.raises(ValueError, match=r"route values must lie in \[0, 2\)"),
    ):
        F.route_sort(torch.tensor([0, 2, 1], device=DEVICE), 2)


def test_linear_segments():
    weight, bias, _, alpha = make_bank((4, 5), 2, shared=True, alpha_kind="layer")
    x = make_x((6, 5))

    def ours(x, w, b, a):
        with robustkernels.use_backend("triton"):
            return F.path_linear(x, w[0], "split", bias_bank=b, noise=(a, [0.0, 1.0], [0, 3]))

    def ref(x, w, b, a):
        return reference.path_linear(x, w, b, [3, 3], [0.0, 1.0], [0, 3], a)

    got = grads_of(ours, on_device(x, weight, bias, alpha))
    assert_all_close([g.cpu() for g in got], grads_of(ref, (x, weight, bias, alpha)))
