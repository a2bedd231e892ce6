"""The fused attack step against its reference, on every backend and device (see helpers.py for
the device convention)."""

import pytest
import torch
from helpers import HALF_DTYPES, TOLERANCE, assert_half_close, require_backend, targets

import robustkernels
from robustkernels import functional as F
from robustkernels import reference
from robustkernels.ops import pgd_step as pgd_step_ops

NORMS = ["linf", "l2"]
SHAPES = [(1, 5), (4, 3, 7, 5), (3, 1, 2, 2), (6, 13), (5,)]
TARGETS = targets("cpp", "reference", "triton")  # no CUDA C++ kernel: Triton serves GPUs


@pytest.fixture
def small_blocks(monkeypatch):
    """Triton blocks of 16 elements, so the L∞ grid has several programs and the L2 loops run several times."""
    monkeypatch.setattr(pgd_step_ops, "_LINF_BLOCK", 16)
    monkeypatch.setattr(pgd_step_ops, "_L2_BLOCK_MAX", 16)


def kernel_scalar(target, value: float) -> float:
    """The value a kernel computes with for the Python float `value`: Triton's compiler passes
    Python floats to a kernel as fp32 (its interpreter keeps them float64), which shows in
    float64 results."""
    if target.backend == "triton" and target.device == "cuda":
        return torch.tensor(value, dtype=torch.float32).item()
    return value


def make_case(shape, dtype=torch.float32, seed=0):
    """x_orig in [0, 1], x_adv near it (some coordinates outside the eps ball and the box), a gradient."""
    gen = torch.Generator().manual_seed(seed)
    x_orig = torch.rand(shape, generator=gen, dtype=torch.float64)
    x_adv = x_orig + 0.3 * torch.randn(shape, generator=gen, dtype=torch.float64)
    grad = torch.randn(shape, generator=gen, dtype=torch.float64)
    return x_adv.to(dtype), grad.to(dtype), x_orig.to(dtype)


def run_with_grad(backend, x_adv, grad, x_orig, step, **kwargs):
    inputs = [t.detach().clone().requires_grad_(True) for t in (x_adv, grad, x_orig)]
    with robustkernels.use_backend(backend):
        out = F.pgd_step(*inputs, step=step, **kwargs)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad(out, inputs, upstream.to(dtype=out.dtype, device=out.device))
    return (out, *grads)


def reference_with_grad(x_adv, grad, x_orig, step, **kwargs):
    compute = torch.float64 if x_adv.dtype == torch.float64 else torch.float32
    inputs = [t.detach().to(compute).requires_grad_(True) for t in (x_adv, grad, x_orig)]
    out = reference.pgd_step(*inputs, step, **kwargs)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(compute)
    return (out, *torch.autograd.grad(out, inputs, upstream))


def cases():
    for norm in NORMS:
        for shape in SHAPES:
            for normalize in (True, False):
                yield pytest.param(
                    norm, shape, normalize, id=f"{norm}-{'x'.join(map(str, shape))}-{normalize}"
                )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("norm", "shape", "normalize"), list(cases()))
def test_matches_reference_float32(small_blocks, target, norm, shape, normalize):
    x_adv, grad, x_orig = make_case(shape)
    eps = 0.1 if norm == "linf" else 0.5
    kwargs = {"eps": eps, "norm": norm, "normalize": normalize}
    got = run_with_grad(target.backend, *target.to(x_adv, grad, x_orig), 0.05, **kwargs)
    expected = reference_with_grad(x_adv, grad, x_orig, 0.05, **kwargs)
    for g, e in zip(got, expected, strict=True):
        assert g.device.type == target.device
        torch.testing.assert_close(g.cpu(), e, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("norm", NORMS)
def test_result_in_ball_and_box(norm):
    x_adv, grad, x_orig = make_case((8, 3, 5, 5), seed=3)
    x_orig = 0.1 + 0.8 * x_orig  # inside the box, as attacks' inputs are
    eps = 0.05 if norm == "linf" else 0.4
    out = F.pgd_step(x_adv, grad, x_orig, step=0.3, eps=eps, norm=norm, lo=0.1, hi=0.9)
    assert out.min() >= 0.1 and out.max() <= 0.9
    delta = (out - x_orig).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    assert bool((size <= eps * (1 + 1e-6)).all())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("norm", NORMS)
def test_per_sample_step(target, norm):
    """A [B] step tensor equals B separate calls with one step each, and a zero step moves only by projection."""
    x_adv, grad, x_orig = target.to(*make_case((4, 2, 3, 3), seed=5))
    steps = torch.tensor([0.0, 0.01, 0.1, 1.0], device=target.device)
    with robustkernels.use_backend(target.backend):
        together = F.pgd_step(x_adv, grad, x_orig, step=steps, eps=0.2, norm=norm)
        for b in range(4):
            alone = F.pgd_step(
                x_adv[b : b + 1], grad[b : b + 1], x_orig[b : b + 1], step=float(steps[b]), eps=0.2, norm=norm
            )
            torch.testing.assert_close(together[b : b + 1], alone)
        projected = F.pgd_step(x_adv, grad, x_orig, step=0.0, eps=0.2, norm=norm)
    torch.testing.assert_close(together[0], projected[0])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("norm", NORMS)
def test_zero_gradient_and_zero_eps(target, norm):
    x_orig, zero, grad = target.to(torch.rand(3, 10), torch.zeros(3, 10), torch.randn(3, 10))
    with robustkernels.use_backend(target.backend):
        same = F.pgd_step(x_orig, zero, x_orig, step=0.5, eps=0.1, norm=norm)
        pinned = F.pgd_step(x_orig + 0.3, grad, x_orig, step=0.5, eps=0.0, norm=norm)
    assert torch.equal(same, x_orig)
    assert torch.equal(pinned, x_orig)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("norm", NORMS)
def test_other_dtypes_with_per_sample_steps(small_blocks, target, dtype, norm):
    """Half precision by the rule of helpers.assert_half_close; float64 to float64's precision, with
    the scalars the kernel computes with (see kernel_scalar)."""
    x_adv, grad, x_orig = make_case((3, 4, 6), dtype=dtype, seed=9)
    steps = torch.tensor([0.0, 0.05, 0.5], dtype=dtype)
    *inputs, device_steps = target.to(x_adv, grad, x_orig, steps)
    with robustkernels.use_backend(target.backend):
        out = F.pgd_step(*inputs, step=device_steps, eps=0.3, norm=norm)
    assert out.dtype == dtype and out.device.type == target.device
    eps = kernel_scalar(target, 0.3) if dtype == torch.float64 else 0.3
    oracle = reference.pgd_step(x_adv.double(), grad.double(), x_orig.double(), steps.double(), eps, norm)
    if dtype in HALF_DTYPES:
        assert_half_close(out, reference.pgd_step(x_adv, grad, x_orig, steps, 0.3, norm), oracle)
    else:
        torch.testing.assert_close(out.cpu(), oracle, **TOLERANCE[dtype])


@pytest.mark.parametrize("target", TARGETS)
def test_non_contiguous(target):
    x_adv, grad, x_orig = make_case((5, 3, 4, 6), seed=4)
    views = [t.transpose(1, 3) for t in (x_adv, grad, x_orig)]
    device_views = target.to(*views)  # keeps the strides
    assert not device_views[0].is_contiguous()
    for norm in NORMS:
        with robustkernels.use_backend(target.backend):
            out = F.pgd_step(*device_views, step=0.05, eps=0.3, norm=norm)
        expected = reference.pgd_step(*(v.contiguous() for v in views), 0.05, 0.3, norm)
        torch.testing.assert_close(out.cpu(), expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck_float64(norm, normalize):
    require_backend("cpp")
    x_adv, grad, x_orig = make_case((3, 4, 2), dtype=torch.float64, seed=6)
    inputs = (x_adv.requires_grad_(True), grad.requires_grad_(True), x_orig.requires_grad_(True))
    step = torch.tensor([0.05, 0.2, 0.5], dtype=torch.float64, requires_grad=True)
    eps = 0.1 if norm == "linf" else 0.6

    def fn(x, g, o, s):
        return F.pgd_step(x, g, o, step=s, eps=eps, norm=norm, lo=-0.2, hi=1.2, normalize=normalize)

    assert torch.autograd.gradcheck(fn, (*inputs, step))


def test_opcheck():
    x_adv, grad, x_orig = (t.requires_grad_(True) for t in make_case((4, 3, 5)))
    step = torch.full((4,), 0.05, requires_grad=True)
    for norm in NORMS:
        for normalize in (True, False):
            torch.library.opcheck(
                torch.ops.robustkernels.pgd_step.default,
                (x_adv, grad, x_orig, step, 0.2, norm, 0.0, 1.0, normalize),
            )


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(compile_backend):
    x_adv, grad, x_orig = make_case((4, 3, 5), seed=7)
    x_adv.requires_grad_(True)

    def step(x):
        return (F.pgd_step(x * 1.0, grad, x_orig, step=0.05, eps=0.5, norm="l2") ** 2).sum()

    compiled = torch.compile(step, backend=compile_backend, fullgraph=True)
    eager = torch.autograd.grad(step(x_adv), x_adv)[0]
    got = torch.autograd.grad(compiled(x_adv), x_adv)[0]
    torch.testing.assert_close(got, eager)


X = torch.rand(2, 3)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((X.long(), X.long(), X.long()), {}, TypeError, "x_adv"),
        (([1.0], X, X), {}, TypeError, "x_adv"),
        ((torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0)), {}, ValueError, "x_adv"),
        ((X, X.double(), X), {}, TypeError, "grad"),
        ((X, X, X[:1]), {}, ValueError, "x_orig"),
        ((X, X, X), {"step": "0.1"}, TypeError, "step"),
        ((X, X, X), {"step": float("nan")}, ValueError, "step"),
        ((X, X, X), {"step": torch.ones(3)}, ValueError, "step"),
        ((X, X, X), {"step": torch.ones(2, dtype=torch.long)}, TypeError, "step"),
        ((X, X, X), {"eps": -0.1}, ValueError, "eps"),
        ((X, X, X), {"eps": float("inf")}, ValueError, "eps"),
        ((X, X, X), {"norm": "l1"}, ValueError, "norm"),
        ((X, X, X), {"lo": 1.0, "hi": 0.0}, ValueError, "lo"),
        ((X, X, X), {"normalize": 1}, TypeError, "normalize"),
    ],
)
def test_bad_arguments(args, kwargs, error, name):
    kwargs = {"step": 0.1, "eps": 0.1, **kwargs}
    with pytest.raises(error, match=name):
        F.pgd_step(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((X.long(), X.long(), X.long(), torch.ones(2), 0.1, "linf", 0.0, 1.0, True), TypeError, "x_adv"),
        ((X, X.double(), X, torch.ones(2), 0.1, "linf", 0.0, 1.0, True), TypeError, "grad"),
        ((X, X, X[:, :2], torch.ones(2), 0.1, "linf", 0.0, 1.0, True), ValueError, "x_orig"),
        ((X, X, X, torch.ones(3), 0.1, "linf", 0.0, 1.0, True), ValueError, "step"),
        ((X, X, X, torch.ones(2), -0.1, "linf", 0.0, 1.0, True), ValueError, "eps"),
        ((X, X, X, torch.ones(2), 0.1, "l1", 0.0, 1.0, True), ValueError, "norm"),
        ((X, X, X, torch.ones(2), 0.1, "l2", 1.0, 0.0, True), ValueError, "lo"),
    ],
)
def test_cpp_kernel_checks_its_arguments(args, error, name):
    require_backend("cpp")
    with pytest.raises(error, match=name):
        torch.ops.robustkernels.pgd_step_fwd_kernel(*args)
