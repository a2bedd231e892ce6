"""The Triton kernels of the multi-resolution stack (under the interpreter on machines without a GPU)."""

import pytest
import torch
from helpers import require_backend
from test_multires_stack import assert_close, images, reference_with_grad, run_with_grad

import robustkernels
from robustkernels import functional as F

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _needs_triton():
    require_backend("triton", DEVICE)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "area"])
@pytest.mark.parametrize(
    ("shape", "resolutions"), [((2, 3, 16, 16), (16, 8, 5)), ((2, 2, 13, 11), ((13, 11), (5, 3)))]
)
@pytest.mark.parametrize("noise_kind", ["uniform", "gaussian"])
def test_matches_reference(interpolation, shape, resolutions, noise_kind):
    x = images(shape)
    kwargs = dict(
        resolutions=resolutions,
        jitter=3,
        noise=0.2,
        noise_kind=noise_kind,
        interpolation=interpolation,
        seed=11,
    )
    out, grad = run_with_grad("triton", x.to(DEVICE), **kwargs)
    expected_out, expected_grad = reference_with_grad(x, **kwargs)
    assert_close(out.cpu(), expected_out, torch.float32)
    assert_close(grad.cpu(), expected_grad, torch.float32)


def test_float64_and_clean_view():
    x = images((2, 3, 12, 12), torch.float64)
    out, grad = run_with_grad("triton", x.to(DEVICE), resolutions=(12, 6), seed=5)
    expected_out, expected_grad = reference_with_grad(x, resolutions=(12, 6), seed=5)
    assert_close(out.cpu(), expected_out, torch.float64)
    assert_close(grad.cpu(), expected_grad, torch.float64)
    with robustkernels.use_backend("triton"):
        clean = F.multires_stack(x.to(DEVICE), (12,), jitter=0, noise=0.0, contrast=(1.0, 1.0), seed=1)
    assert torch.equal(clean.cpu(), x)


def test_same_bits_as_cpp():
    require_backend("cpp")
    x = images((3, 3, 16, 16))
    with robustkernels.use_backend("triton"):
        triton_out = F.multires_stack(x.to(DEVICE), (16, 8, 4), seed=2**40 + 1, noise_kind="gaussian")
    with robustkernels.use_backend("cpp"):
        cpp_out = F.multires_stack(x, (16, 8, 4), seed=2**40 + 1, noise_kind="gaussian")
    torch.testing.assert_close(triton_out.cpu(), cpp_out, atol=2e-6, rtol=0)
