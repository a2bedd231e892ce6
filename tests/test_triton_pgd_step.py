"""The Triton kernels of the attack step (under the interpreter on machines without a GPU)."""

import pytest
import torch
from helpers import TOLERANCE, require_backend
from test_pgd_step import make_case, reference_with_grad, run_with_grad

import robustkernels
from robustkernels import functional as F
from robustkernels.ops import pgd_step as pgd_step_ops

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _needs_triton():
    require_backend("triton", DEVICE)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 elements, so the L∞ grid has several programs and the L2 loops run several times."""
    monkeypatch.setattr(pgd_step_ops, "_LINF_BLOCK", 16)
    monkeypatch.setattr(pgd_step_ops, "_L2_BLOCK_MAX", 16)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(3, 2, 5, 7), (1, 5), (4,)], ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(small_blocks, norm, normalize, shape):
    x_adv, grad, x_orig = make_case(shape, seed=8)
    kwargs = {"eps": 0.1 if norm == "linf" else 0.5, "norm": norm, "normalize": normalize}
    got = run_with_grad("triton", x_adv.to(DEVICE), grad.to(DEVICE), x_orig.to(DEVICE), 0.05, **kwargs)
    expected = reference_with_grad(x_adv, grad, x_orig, 0.05, **kwargs)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_per_sample_step_and_dtypes(norm):
    for dtype in (torch.float64, torch.float16):
        x_adv, grad, x_orig = (t.to(DEVICE) for t in make_case((3, 4, 6), dtype=dtype, seed=9))
        steps = torch.tensor([0.0, 0.05, 0.5], dtype=dtype, device=DEVICE)
        with robustkernels.use_backend("triton"):
            out = F.pgd_step(x_adv, grad, x_orig, step=steps, eps=0.3, norm=norm)
        assert out.dtype == dtype
        expected = F.pgd_step(
            *(t.cpu().double() for t in (x_adv, grad, x_orig)), step=steps.cpu().double(), eps=0.3, norm=norm
        )
        torch.testing.assert_close(out.cpu().double(), expected, **TOLERANCE[dtype])
