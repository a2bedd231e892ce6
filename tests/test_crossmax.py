"""CrossMax (multi-resolution self-ensemble aggregation) against its reference, on every backend
and device (see helpers.py for the device convention)."""

import pytest
import torch
from helpers import TOLERANCE, assert_half_close, record_backend_selections, require_backend, targets

import robustkernels
from robustkernels import functional as F
from robustkernels import reference
from robustkernels.nn import CrossMax
from robustkernels.ops import crossmax as crossmax_ops

REDUCTIONS = ["kth", "topk_mean", "median"]
SHAPES = [(n, b, c) for n in (1, 3, 7) for b in (1, 5) for c in (2, 10, 13)]
TARGETS = targets("cpp", "reference", "triton")  # no CUDA C++ kernel: Triton serves GPUs


@pytest.fixture
def small_tiles(monkeypatch):
    """Triton tiles of 16 elements, so that the loops over class tiles run several times."""
    monkeypatch.setattr(crossmax_ops, "_TILE", 16)


def ks_for(num_predictors, reduction):
    """k in {1, 2, N} where valid; median does not use k."""
    if reduction == "median":
        return [3]
    return sorted({k for k in (1, 2, num_predictors) if k <= num_predictors})


def cases():
    for reduction in REDUCTIONS:
        for shape in SHAPES:
            for k in ks_for(shape[0], reduction):
                yield pytest.param(shape, k, reduction, id=f"{reduction}-k{k}-{'x'.join(map(str, shape))}")


def make_logits(shape, dtype=torch.float32, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def out_grad(shape, dtype, seed=1, device="cpu"):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype=dtype, device=device)


def run_with_grad(backend, logits, grad_seed=1, grad_dtype=None, **kwargs):
    """Forward and backward on `backend`, on logits' device; the incoming gradient is drawn in
    `grad_dtype` (default the output's) and cast to the output's dtype."""
    logits = logits.detach().clone().requires_grad_(True)
    with robustkernels.use_backend(backend):
        out = F.crossmax(logits, **kwargs)
        grad_out = out_grad(out.shape, grad_dtype or out.dtype, grad_seed, out.device).to(out.dtype)
        (grad,) = torch.autograd.grad(out, logits, grad_out)
    return out, grad


def reference_with_grad(logits, grad_seed=1, **kwargs):
    """The public max/topk sequence in float32 (float64 for float64), through autograd."""
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logits = logits.detach().to(compute).requires_grad_(True)
    out = reference.crossmax(logits, **kwargs)
    grad_out = out_grad(out.shape, torch.float32 if compute == torch.float32 else torch.float64, grad_seed)
    (grad,) = torch.autograd.grad(out, logits, grad_out)
    return out, grad


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("shape", "k", "reduction"), list(cases()))
def test_matches_reference_float32(target, shape, k, reduction):
    logits = make_logits(shape)
    got = run_with_grad(target.backend, *target.to(logits), k=k, reduction=reduction)
    expected = reference_with_grad(logits, k=k, reduction=reduction)
    for g, e in zip(got, expected, strict=True):
        assert g.device.type == target.device
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "k"), [((7, 3, 13), 5), ((12, 2, 9), 9), ((12, 2, 9), 2)])
@pytest.mark.parametrize("target", targets("triton"))
def test_triton_class_loops_equal_cpp(small_tiles, target, shape, k, reduction):
    """Several Triton class tiles per sample, ranks from the top and from the bottom: the same
    values and indices as the C++ kernel."""
    require_backend("cpp")
    logits = make_logits(shape, seed=5)
    with robustkernels.use_backend("triton"):
        triton_out = torch.ops.robustkernels.crossmax(*target.to(logits), k, reduction)
    cpp_out = torch.ops.robustkernels.crossmax_fwd_kernel(logits, k, reduction)
    for t, c in zip(triton_out, cpp_out, strict=True):
        torch.testing.assert_close(t.cpu(), c, atol=1e-6, rtol=1e-6)
    triton_grad = run_with_grad("triton", *target.to(logits), k=k, reduction=reduction)[1]
    cpp_grad = run_with_grad("cpp", logits, k=k, reduction=reduction)[1]
    torch.testing.assert_close(triton_grad.cpu(), cpp_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("num_predictors", "k"), [(20, 12), (20, 20), (9, 9), (16, 10)])
def test_deep_ranks(reduction, num_predictors, k):
    """Ranks deeper than the insertion buffer take the nth_element path of the C++ kernel."""
    require_backend("cpp")
    logits = make_logits((num_predictors, 3, 11), seed=4)
    got = run_with_grad("cpp", logits, k=k, reduction=reduction)
    expected = reference_with_grad(logits, k=k, reduction=reduction)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_other_dtypes(target, dtype, reduction):
    """Half precision by the rule of helpers.assert_half_close: the forward against the public
    sequence in the same dtype, the backward against the reference backend in the same dtype
    (the kernels' lowest-index rule for ties, which low precision makes likely; torch.topk's
    choice among ties is unspecified), both with float64 oracles on the same values."""
    logits = make_logits((7, 5, 13), dtype=dtype, seed=2)
    out, grad = run_with_grad(target.backend, *target.to(logits), k=2, reduction=reduction)
    assert out.dtype == grad.dtype == dtype and out.device.type == target.device
    oracle_out, oracle_grad = run_with_grad(
        "reference", logits.double(), grad_dtype=dtype, k=2, reduction=reduction
    )
    if dtype == torch.float64:
        torch.testing.assert_close(out.cpu(), oracle_out, **TOLERANCE[dtype])
        torch.testing.assert_close(grad.cpu(), oracle_grad, **TOLERANCE[dtype])
        return
    assert_half_close(out, reference.crossmax(logits, 2, reduction), oracle_out, "forward")
    assert_half_close(
        grad, run_with_grad("reference", logits, k=2, reduction=reduction)[1], oracle_grad, "grad"
    )


@pytest.mark.parametrize("target", TARGETS)
def test_non_contiguous_and_predictor_dim(target):
    logits = make_logits((7, 5, 13), seed=3)
    expected = reference_with_grad(logits, k=3, reduction="kth")
    views = {
        "permuted": (logits.permute(2, 1, 0).contiguous().permute(2, 1, 0), 0),
        "predictor_dim=1": (logits.transpose(0, 1).contiguous(), 1),
        "predictor_dim=-1": (logits.permute(1, 2, 0).contiguous(), -1),
    }
    wide = torch.zeros(7, 5, 26)
    wide[:, :, ::2] = logits
    views["strided classes"] = (wide[:, :, ::2], 0)
    for name, (view, dim) in views.items():
        view = view.to(target.device)  # keeps the strides
        if name != "predictor_dim=1":
            assert not view.is_contiguous() or dim != 0, name
        view = view.detach().requires_grad_(True)
        with robustkernels.use_backend(target.backend):
            out = F.crossmax(view, k=3, reduction="kth", predictor_dim=dim)
            (grad,) = torch.autograd.grad(out, view, out_grad(out.shape, out.dtype, device=out.device))
        torch.testing.assert_close(out.cpu(), expected[0], **TOLERANCE[torch.float32])
        torch.testing.assert_close(grad.movedim(dim, 0).cpu(), expected[1], **TOLERANCE[torch.float32])


@pytest.mark.parametrize("target", TARGETS)
def test_single_predictor(target):
    """N = 1, k = 1: Z is 0 everywhere and so is the gradient."""
    (logits,) = target.to(make_logits((1, 4, 6)))
    for reduction in REDUCTIONS:
        out, grad = run_with_grad(target.backend, logits, k=1, reduction=reduction)
        assert torch.equal(out.cpu(), torch.zeros(4, 6))
        assert torch.equal(grad.cpu(), torch.zeros(1, 4, 6))


def tie_rule_gradient(num_predictors, batch, classes, selected, grad_out):
    """The documented rule on all-equal logits: every argmax is index 0 (a_n = 0, m = 0), the
    selection takes predictors in index order; each selected z[n, b, c] = x[n,b,c] - x[n,b,0]
    - x[0,b,c] + x[0,b,0] passes its share g to those four logits as +g, -g, -g, +g."""
    grad = torch.zeros(num_predictors, batch, classes, dtype=torch.float64)
    share = grad_out.double() / len(selected)
    for n in selected:
        grad[n] += share
        grad[n, :, 0] -= share.sum(dim=1)
        grad[0] -= share
        grad[0, :, 0] += share.sum(dim=1)
    return grad


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    ("reduction", "k", "selected"),
    [("kth", 2, [1]), ("kth", 4, [3]), ("kth", 1, [0]), ("topk_mean", 3, [0, 1, 2]), ("median", 1, [2])],
)
def test_ties_go_to_lowest_index(small_tiles, target, reduction, k, selected):
    logits = torch.full((4, 3, 5), 1.5, device=target.device)
    out, grad = run_with_grad(target.backend, logits, k=k, reduction=reduction)
    assert torch.equal(out.cpu(), torch.zeros(3, 5))
    expected = tie_rule_gradient(4, 3, 5, selected, out_grad((3, 5), torch.float32))
    torch.testing.assert_close(grad.cpu().double(), expected, atol=1e-6, rtol=1e-6)
    again = run_with_grad(target.backend, logits, k=k, reduction=reduction)[1]
    assert torch.equal(grad, again)


def test_ties_same_on_every_cpu_backend():
    """Integer logits with many ties: C++ and the index-based reference pick the same elements."""
    require_backend("cpp")
    logits = torch.randint(0, 3, (6, 4, 7), generator=torch.Generator().manual_seed(0)).float()
    for reduction in REDUCTIONS:
        for k in (1, 3, 6):
            cpp_out = torch.ops.robustkernels.crossmax_fwd_kernel(logits, k, reduction)
            with robustkernels.use_backend("reference"):
                ref_out = torch.ops.robustkernels.crossmax(logits, k, reduction)
            for c, r in zip(cpp_out, ref_out, strict=True):
                assert torch.equal(c, r), reduction
            assert torch.equal(
                run_with_grad("cpp", logits, k=k, reduction=reduction)[1],
                run_with_grad("cpp", logits, k=k, reduction=reduction)[1],
            )


def test_median_convention():
    """Lower median: for even N the smaller of the two middle values, as torch.median."""
    z = torch.tensor([[0.0], [-1.0], [-2.0], [-3.0]]).reshape(4, 1, 1).expand(4, 1, 2).contiguous()
    z[:, :, 1] = 5.0  # class 1 is every predictor's argmax; class 0 holds -0, -1, -2, -3 minus 5
    out = F.crossmax(z, reduction="median")
    torch.testing.assert_close(out, torch.tensor([[-2.0, 0.0]]))
    assert torch.equal(out, F.crossmax(z, k=3, reduction="kth"))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_float64(reduction):
    require_backend("cpp")
    logits = make_logits((5, 3, 4), dtype=torch.float64, seed=7).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: F.crossmax(x, k=2, reduction=reduction), (logits,))
    assert torch.autograd.gradcheck(
        lambda x: F.crossmax(x, k=3, reduction=reduction, predictor_dim=1),
        (logits.detach().transpose(0, 1).requires_grad_(True),),
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_double_backward_matches_reference(reduction):
    """A penalty on the input gradient (e.g. gradient-norm regularisation) differentiates CrossMax's
    backward in the upstream gradient: gradgradcheck, then the reference's value."""
    torch.manual_seed(0)
    x = torch.randn(5, 3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: F.crossmax(t, k=3, reduction=reduction), (x,))
    weights = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)

    def penalty_grad(crossmax):
        (dx,) = torch.autograd.grad((crossmax(x) * weights).sum(), x, create_graph=True)
        return torch.autograd.grad(dx.square().sum(), weights)[0]

    expected = penalty_grad(lambda t: reference.crossmax(t, k=3, reduction=reduction))
    torch.testing.assert_close(penalty_grad(lambda t: F.crossmax(t, k=3, reduction=reduction)), expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck(reduction):
    logits = make_logits((5, 3, 7)).requires_grad_(True)
    torch.library.opcheck(torch.ops.robustkernels.crossmax.default, (logits, 2, reduction))
    _, class_idx, pred_idx, sel_idx = torch.ops.robustkernels.crossmax(logits.detach(), 2, reduction)
    torch.library.opcheck(
        torch.ops.robustkernels.crossmax_backward.default, (torch.randn(3, 7), class_idx, pred_idx, sel_idx)
    )


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    logits = make_logits((6, 4, 9)).requires_grad_(True)

    def step(x):
        return (F.crossmax(x.permute(1, 0, 2), k=3, predictor_dim=1) ** 2).sum()

    compiled = torch.compile(step, backend=compile_backend, fullgraph=True)
    eager = torch.autograd.grad(step(logits), logits)[0]
    got = torch.autograd.grad(compiled(logits), logits)[0]
    torch.testing.assert_close(got, eager)


def test_default_path_calls_no_python_kernel(monkeypatch):
    """Outside use_backend the C++ op runs the C++ kernels, forward and backward: no Python
    backend selection (the use_backend path records one per kernel)."""
    require_backend("cpp")
    calls = record_backend_selections(monkeypatch)
    logits = make_logits((5, 3, 7)).requires_grad_(True)
    F.crossmax(logits, k=2).sum().backward()
    assert calls == [] and logits.grad is not None
    with robustkernels.use_backend("cpp"):
        F.crossmax(logits, k=2).sum().backward()
    assert calls == ["crossmax", "crossmax_backward"]


def test_module():
    heads = [make_logits((4, 10), seed=s) for s in range(5)]
    module = CrossMax(k=2, reduction="topk_mean", predictor_dim=1)
    stacked = torch.stack(heads, dim=1)
    torch.testing.assert_close(
        module(heads), F.crossmax(stacked, k=2, reduction="topk_mean", predictor_dim=1)
    )
    torch.testing.assert_close(module(stacked), reference.crossmax(stacked, 2, "topk_mean", predictor_dim=1))
    assert "k=2" in repr(module)


LOGITS = torch.randn(3, 2, 4)


@pytest.mark.parametrize(
    ("logits", "kwargs", "error", "name"),
    [
        (LOGITS.long(), {}, TypeError, "logits"),
        (LOGITS.to(torch.complex64), {}, TypeError, "logits"),
        ([1.0, 2.0], {}, TypeError, "logits"),
        (torch.randn(3, 4), {}, ValueError, "logits"),
        (torch.randn(3, 2, 4, 1), {}, ValueError, "logits"),
        (torch.empty(0, 2, 4), {}, ValueError, "logits"),
        (torch.empty(3, 0, 4), {}, ValueError, "logits"),
        (torch.empty(3, 2, 0), {}, ValueError, "logits"),
        (LOGITS, {"k": 0}, ValueError, "k"),
        (LOGITS, {"k": 4}, ValueError, "k"),
        (LOGITS, {"k": 4, "reduction": "topk_mean"}, ValueError, "k"),
        (LOGITS, {"k": 1.5}, TypeError, "k"),
        (LOGITS, {"k": True}, TypeError, "k"),
        (LOGITS, {"reduction": "max"}, ValueError, "reduction"),
        (LOGITS, {"predictor_dim": 3}, ValueError, "predictor_dim"),
        (LOGITS, {"predictor_dim": 0.0}, TypeError, "predictor_dim"),
    ],
)
def test_bad_arguments(logits, kwargs, error, name):
    with pytest.raises(error, match=name):
        F.crossmax(logits, **kwargs)


def test_median_ignores_k():
    assert F.crossmax(LOGITS, k=10, reduction="median").shape == (2, 4)


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((LOGITS.long(), 1, "kth"), TypeError, "logits"),
        ((torch.randn(3, 4), 1, "kth"), ValueError, "logits"),
        ((torch.empty(3, 0, 4), 1, "kth"), ValueError, "logits"),
        ((LOGITS, 0, "kth"), ValueError, "k"),
        ((LOGITS, 4, "topk_mean"), ValueError, "k"),
        ((LOGITS, 1, "mean"), ValueError, "reduction"),
    ],
)
def test_cpp_kernel_checks_its_arguments(args, error, name):
    require_backend("cpp")
    with pytest.raises(error, match=name):
        torch.ops.robustkernels.crossmax_fwd_kernel(*args)


def test_cpp_backward_kernel_checks_its_arguments():
    require_backend("cpp")
    _, class_idx, pred_idx, sel_idx = torch.ops.robustkernels.crossmax_fwd_kernel(LOGITS, 2, "kth")
    grad = torch.randn(2, 4)
    bwd = torch.ops.robustkernels.crossmax_bwd_kernel
    with pytest.raises(TypeError, match="grad_out"):
        bwd(grad.long(), class_idx, pred_idx, sel_idx)
    with pytest.raises(ValueError, match="grad_out"):
        bwd(grad[0], class_idx, pred_idx, sel_idx)
    with pytest.raises(TypeError, match="int32"):
        bwd(grad, class_idx.long(), pred_idx, sel_idx)
    with pytest.raises(ValueError, match="class_idx"):
        bwd(grad, class_idx[:, :1], pred_idx, sel_idx)
    with pytest.raises(ValueError, match="pred_idx"):
        bwd(grad, class_idx, pred_idx[:, :2], sel_idx)
    with pytest.raises(ValueError, match="sel_idx"):
        bwd(grad, class_idx, pred_idx, sel_idx.expand(4, 2, 4))
    with pytest.raises(ValueError, match="out of range"):
        bwd(grad, class_idx, pred_idx, sel_idx + 3)
