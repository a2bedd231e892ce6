"""The C++ CrossMax kernel on every instruction-set path (scalar, AVX2, AVX-512), each forced on
purpose: against the reference, with heavy ties, and the paths against each other bit for bit.
The shapes cover the kernel's blocks of classes (fewer classes than one vector, exact vectors, a
remainder) and its register table of ranks (depth 1 to 8) and the deeper nth_element path."""

import pytest
import torch
from helpers import TOLERANCE, require_backend

import robustkernels
from robustkernels import cpu_isa, reference

REDUCTIONS = ["kth", "topk_mean", "median"]
# classes: fewer than one float32 vector (8), one, several, several with a remainder
SHAPES = [(n, b, c) for n in (1, 2, 5, 8, 9, 16) for b in (3,) for c in (3, 8, 21, 100)]


def require_isa(isa: str) -> None:
    require_backend("cpp")
    reason = cpu_isa.unsupported_reason(isa)
    if reason is not None:
        pytest.skip(f"path {isa!r} unavailable: {reason}")


def ks_for(num_predictors: int, reduction: str) -> list[int]:
    """Every register depth up to 8, the deep path, and N; median ignores k."""
    if reduction == "median":
        return [1]
    return sorted({k for k in (1, 2, 3, 8, 9, num_predictors) if k <= num_predictors})


def kernel(logits, k, reduction, isa):
    """Forward outputs and the gradient for a fixed incoming gradient, on one path."""
    with cpu_isa.use_cpu_isa(isa):
        outputs = torch.ops.robustkernels.crossmax_fwd_kernel(logits, k, reduction)
        grad_out = torch.randn(outputs[0].shape, generator=torch.Generator().manual_seed(1)).to(logits.dtype)
        grad = torch.ops.robustkernels.crossmax_bwd_kernel(grad_out, *outputs[1:])
    return [*outputs, grad]


def index_reference(logits, k, reduction):
    """The reference backend's forward: the same index outputs under the same tie rule."""
    with robustkernels.use_backend("reference"):
        return torch.ops.robustkernels.crossmax(logits, k, reduction)


def bits(t: torch.Tensor) -> torch.Tensor:
    """An integer view, so that equality tells -0 from +0 and compares NaNs."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("isa", cpu_isa.ISAS)
def test_path_matches_reference(isa, reduction):
    require_isa(isa)
    for shape in SHAPES:
        logits = torch.randn(shape, generator=torch.Generator().manual_seed(shape[0] * 100 + shape[2])) * 3
        for k in ks_for(shape[0], reduction):
            out, class_idx, pred_idx, sel_idx, _ = kernel(logits, k, reduction, isa)
            expected = index_reference(logits, k, reduction)
            torch.testing.assert_close(out, expected[0], **TOLERANCE[torch.float32])
            for got, want in zip((class_idx, pred_idx, sel_idx), expected[1:], strict=True):
                assert torch.equal(got, want), (isa, shape, k, reduction)
            x = logits.clone().requires_grad_(True)
            value = reference.crossmax(x, k if reduction != "median" else 3, reduction)
            grad_out = torch.randn(value.shape, generator=torch.Generator().manual_seed(1))
            (oracle,) = torch.autograd.grad(value, x, grad_out)
            torch.testing.assert_close(
                kernel(logits, k, reduction, isa)[4], oracle, **TOLERANCE[torch.float32]
            )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("isa", cpu_isa.ISAS)
def test_path_heavy_ties(isa, reduction):
    """Integer logits in {0, 1, 2}: most values tie; the path picks exactly the reference's
    elements (higher value first, then lower predictor index), and the same gradient."""
    require_isa(isa)
    for n, b, c in [(3, 4, 5), (8, 3, 21), (12, 2, 37), (20, 2, 9)]:
        logits = torch.randint(0, 3, (n, b, c), generator=torch.Generator().manual_seed(n)).float()
        for k in ks_for(n, reduction):
            got = kernel(logits, k, reduction, isa)
            expected = index_reference(logits, k, reduction)
            for g, e in zip(got[:4], expected, strict=True):
                assert torch.equal(g, e), (isa, n, k, reduction)
            with robustkernels.use_backend("reference"):
                grad_out = torch.randn((b, c), generator=torch.Generator().manual_seed(1))
                oracle = torch.ops.robustkernels.crossmax_backward(grad_out, *expected[1:])
            torch.testing.assert_close(got[4], oracle, atol=1e-6, rtol=1e-6)


def tie_heavy_inputs():
    gen = torch.Generator().manual_seed(0)
    for n, b, c in [(4, 3, 5), (9, 2, 19), (16, 2, 40)]:
        yield "randn", torch.randn((n, b, c), generator=gen, dtype=torch.float64) * 3
        yield "integers", torch.randint(0, 3, (n, b, c), generator=gen).double()
        zeros = torch.zeros(n, b, c, dtype=torch.float64)
        yield "signed zeros", torch.where(torch.rand((n, b, c), generator=gen) < 0.5, zeros, -zeros)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_paths_agree_bitwise(dtype):
    """Every output and the gradient, bit for bit (signed zeros included) on every path, for
    every dtype, reduction and k, also through a non-contiguous view."""
    require_backend("cpp")
    supported = cpu_isa.supported_isas()
    if len(supported) < 2:
        pytest.skip(f"this CPU has one path only ({supported[0]})")
    for kind, values in tie_heavy_inputs():
        logits = values.to(dtype)
        permuted = logits.permute(2, 1, 0).contiguous().permute(2, 1, 0)
        for reduction in REDUCTIONS:
            for k in ks_for(logits.shape[0], reduction):
                first = [bits(t) for t in kernel(logits, k, reduction, supported[0])]
                for isa in supported:
                    for view in (logits, permuted):
                        for g, e in zip(kernel(view, k, reduction, isa), first, strict=True):
                            assert torch.equal(bits(g), e), (kind, isa, reduction, k)
