"""The Triton kernels of CrossMax (under the interpreter on machines without a GPU)."""

import pytest
import torch
from helpers import TOLERANCE, require_backend
from test_crossmax import make_logits, out_grad, reference_with_grad, run_with_grad, tie_rule_gradient

import robustkernels
from robustkernels import functional as F
from robustkernels.ops import crossmax as crossmax_ops

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REDUCTIONS = ["kth", "topk_mean", "median"]


@pytest.fixture(autouse=True)
def _needs_triton():
    require_backend("triton", DEVICE)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 16 elements, so that the loops over class tiles run several times."""
    monkeypatch.setattr(crossmax_ops, "_TILE", 16)


def _cases():
    for reduction in REDUCTIONS:
        for shape in [(1, 3, 2), (3, 5, 13), (7, 2, 10)]:
            ks = [3] if reduction == "median" else sorted({1, min(2, shape[0]), shape[0]})
            for k in ks:
                yield pytest.param(shape, k, reduction, id=f"{reduction}-k{k}-{'x'.join(map(str, shape))}")


@pytest.mark.parametrize(("shape", "k", "reduction"), list(_cases()))
def test_matches_reference(shape, k, reduction):
    logits = make_logits(shape)
    out, grad = run_with_grad("triton", logits.to(DEVICE), k=k, reduction=reduction)
    expected = reference_with_grad(logits, k=k, reduction=reduction)
    torch.testing.assert_close(out.cpu(), expected[0], **TOLERANCE[torch.float32])
    torch.testing.assert_close(grad.cpu(), expected[1], **TOLERANCE[torch.float32])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "k"), [((7, 3, 13), 5), ((12, 2, 9), 9), ((12, 2, 9), 2)])
def test_equals_cpp_kernel_with_class_loops(small_tiles, shape, k, reduction):
    """Several class tiles per sample, ranks from the top and from the bottom; same indices as C++."""
    require_backend("cpp")
    logits = make_logits(shape, seed=5)
    with robustkernels.use_backend("triton"):
        triton_out = torch.ops.robustkernels.crossmax(logits.to(DEVICE), k, reduction)
    cpp_out = torch.ops.robustkernels.crossmax_fwd_kernel(logits, k, reduction)
    for t, c in zip(triton_out, cpp_out, strict=True):
        torch.testing.assert_close(t.cpu(), c, atol=1e-6, rtol=1e-6)
    triton_grad = run_with_grad("triton", logits.to(DEVICE), k=k, reduction=reduction)[1]
    cpp_grad = run_with_grad("cpp", logits, k=k, reduction=reduction)[1]
    torch.testing.assert_close(triton_grad.cpu(), cpp_grad, atol=1e-6, rtol=1e-6)


def test_non_contiguous_and_predictor_dim():
    logits = make_logits((5, 3, 6), seed=3)
    expected = reference_with_grad(logits, k=2, reduction="kth")
    view = logits.permute(1, 2, 0).contiguous().to(DEVICE).requires_grad_(True)  # [B, C, N]
    with robustkernels.use_backend("triton"):
        out = F.crossmax(view, k=2, predictor_dim=2)
        (grad,) = torch.autograd.grad(out, view, out_grad(out.shape, out.dtype).to(DEVICE))
    torch.testing.assert_close(out.cpu(), expected[0], **TOLERANCE[torch.float32])
    torch.testing.assert_close(grad.cpu().permute(2, 0, 1), expected[1], **TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    require_backend("cpp")
    logits = make_logits((5, 3, 7), dtype=dtype, seed=2)
    out, grad = run_with_grad("triton", logits.to(DEVICE), k=2, reduction="topk_mean")
    cpp_out, cpp_grad = run_with_grad("cpp", logits, k=2, reduction="topk_mean")
    assert out.dtype == dtype and grad.dtype == dtype
    tol = TOLERANCE[dtype] if dtype != torch.float64 else TOLERANCE[torch.float32]
    torch.testing.assert_close(out.cpu(), cpp_out, **tol)
    torch.testing.assert_close(grad.cpu(), cpp_grad, **tol)


@pytest.mark.parametrize(
    ("reduction", "k", "selected"), [("kth", 2, [1]), ("topk_mean", 3, [0, 1, 2]), ("median", 1, [2])]
)
def test_ties_go_to_lowest_index(small_tiles, reduction, k, selected):
    logits = torch.full((4, 3, 5), 1.5, device=DEVICE)
    out, grad = run_with_grad("triton", logits, k=k, reduction=reduction)
    assert torch.equal(out.cpu(), torch.zeros(3, 5))
    expected = tie_rule_gradient(4, 3, 5, selected, out_grad((3, 5), torch.float32))
    torch.testing.assert_close(grad.cpu().double(), expected, atol=1e-6, rtol=1e-6)
