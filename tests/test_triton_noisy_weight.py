"""The Triton kernels of the noisy weight family (under the interpreter on machines without a GPU)."""

import pytest
import torch
from helpers import TOLERANCE, require_backend
from test_noisy_weight import ALPHA_SHAPES, make_inputs, reference_with_grads, run_with_grads

import robustkernels
from robustkernels import functional as F

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _needs_triton():
    require_backend("triton", DEVICE)


def _to_device(*tensors):
    return [t.to(DEVICE) if t is not None else None for t in tensors]


@pytest.mark.parametrize("alpha_kind", list(ALPHA_SHAPES))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (3, 1500)])
def test_matches_reference(alpha_kind, masked, shape):
    weight, alpha, mask = make_inputs(shape, alpha_kind, masked=masked)
    got = run_with_grads("triton", *_to_device(weight, alpha, mask), lam=0.8, seed=1234)
    expected = reference_with_grads(weight, alpha, mask, lam=0.8, seed=1234)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    weight, alpha, mask = make_inputs((4, 3, 3, 3), "channel", dtype=dtype)
    got = run_with_grads("triton", *_to_device(weight, alpha, mask), lam=1.0, seed=8)
    expected = reference_with_grads(weight, alpha, mask, lam=1.0, seed=8)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(
            g.cpu().float(), e, atol=TOLERANCE[dtype]["atol"] * 10, rtol=TOLERANCE[dtype]["rtol"]
        )


@pytest.mark.parametrize("alpha_kind", ["element", "channel"])
@pytest.mark.parametrize("shape", [(6, 2, 3, 3), (4, 4, 3, 3)], ids=["rows-unaligned", "rows-aligned"])
def test_equals_cpp_kernel(shape, alpha_kind):
    """Both noise paths of the backward kernel (rows of a multiple of 4 elements or not)."""
    require_backend("cpp")
    weight, alpha, mask = make_inputs(shape, alpha_kind)
    triton_result = run_with_grads("triton", *_to_device(weight, alpha, mask), lam=0.3, seed=2**40 + 1)
    cpp_result = run_with_grads("cpp", weight, alpha, mask, lam=0.3, seed=2**40 + 1)
    for t, c in zip(triton_result, cpp_result, strict=True):
        torch.testing.assert_close(t.cpu(), c, atol=1e-6, rtol=1e-6)


def test_std_over_many_partial_blocks():
    """std(W) combined from several block partials (Chan's formula) equals torch's."""
    weight = (torch.randn(3, 2500) * 2 + 5).to(DEVICE)
    with robustkernels.use_backend("triton"):
        _, sigma = torch.ops.robustkernels.noisy_weight(weight, torch.ones(1, device=DEVICE), 1.0, 0, None)
    torch.testing.assert_close(sigma.cpu(), weight.std().cpu(), atol=1e-5, rtol=1e-5)


def test_lam_zero_exact():
    weight, alpha, mask = _to_device(*make_inputs((4, 3, 3, 3), "layer"))
    with robustkernels.use_backend("triton"):
        out = F.noisy_weight(weight, alpha, lam=0.0, seed=1, mask=mask)
    assert torch.equal(out, weight * mask)


def test_conv2d_through_triton():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=gen)
    weight, alpha, mask = make_inputs((4, 3, 3, 3), "channel")
    x, weight, alpha, mask = _to_device(x, weight, alpha, mask)
    with robustkernels.use_backend("triton"):
        got = F.noisy_conv2d(x, weight, None, alpha, lam=1.0, seed=5, mask=mask, padding=1)
    with robustkernels.use_backend("reference"):
        expected = F.noisy_conv2d(x, weight, None, alpha, lam=1.0, seed=5, mask=mask, padding=1)
    torch.testing.assert_close(got, expected, **TOLERANCE[torch.float32])
