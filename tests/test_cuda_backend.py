"""The hand-written CUDA kernels (backend "cuda") against the reference, Triton and the C++ CPU kernels.

Runs only on a machine with a CUDA device and a robustkernels._C built with the
CUDA sources (a CUDA build of torch and nvcc at build time).
"""

import pytest
import torch

from robustkernels import _extension, functional, use_backend
from robustkernels.ops import backend
from robustkernels.ops import noisy_weight as noisy_weight_ops


def _cuda_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device (torch.cuda.is_available() is False)"
    if not _extension.is_loaded():
        return f"robustkernels._C is not loaded: {_extension.load_error}"
    if not _extension.has_cuda_kernels:
        return "robustkernels._C was built without the CUDA kernels (CPU-only torch or no nvcc at build time)"
    return None


_SKIP = _cuda_skip_reason()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Shapes: conv and linear weights, long rows (several blocks per output channel),
# short rows (one thread per channel) and one weight with many std partials.
SHAPES = [(8, 3, 3, 3), (64, 300), (4, 9000), (300, 4), (1, 5000), (128, 4100)]
MODES = ["layer", "channel", "element"]
SEED = 20240611 + 2**40
LAM = 0.7

# (atol, rtol) against the reference, which rounds every op to the weight dtype
# (std included), and against Triton, which like the CUDA kernels computes in float32.
REF_TOL = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (4e-2, 4e-2),
}
TRITON_TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3)}


def _triton_skip_reason() -> str | None:
    return backend.unavailable_reason("triton", "cuda")


def _make_alpha(mode: str, shape, dtype) -> torch.Tensor:
    if mode == "layer":
        size = (1,)
    elif mode == "channel":
        size = (shape[0],) + (1,) * (len(shape) - 1)
    else:
        size = shape
    return (torch.rand(size, dtype=torch.float32, device="cuda") + 0.5).to(dtype)


def _make_case(shape, dtype, mode, masked, seed=0):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    weight = (torch.randn(shape, device="cuda", generator=generator) * 0.2 + 0.01).to(dtype)
    grad = torch.randn(shape, device="cuda", generator=generator).to(dtype)
    mask = torch.rand(shape, device="cuda", generator=generator) > 0.3 if masked else None
    return weight, _make_alpha(mode, shape, dtype), mask, grad


def _forward_backward(name, weight, alpha, mask, grad, lam, monkeypatch):
    """noisy_weight forward and autograd backward with every op on backend `name`.

    Autograd runs the backward of CUDA tensors on its own device thread, where the
    use_backend context is not set, so the environment variable pins the backend too.
    """
    w = weight.clone().requires_grad_(True)
    a = alpha.clone().requires_grad_(True)
    with monkeypatch.context() as patch:
        patch.setenv("ROBUSTKERNELS_BACKEND", name)
        with use_backend(name):
            out = functional.noisy_weight(w, a, lam=lam, seed=SEED, mask=mask)
            out.backward(grad)
    return out.detach(), w.grad, a.grad


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.cpu()


def _assert_close(actual, expected, tol, what):
    atol, rtol = tol
    scale = max(1.0, expected.detach().abs().max().item())  # sums over many elements are large
    torch.testing.assert_close(actual, expected, atol=atol * scale, rtol=rtol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cuda_matches_reference(shape, masked, mode, dtype, monkeypatch):
    weight, alpha, mask, grad = _make_case(shape, dtype, mode, masked)
    out, gw, ga = _forward_backward("cuda", weight, alpha, mask, grad, LAM, monkeypatch)
    ref_out, ref_gw, ref_ga = _forward_backward("reference", weight, alpha, mask, grad, LAM, monkeypatch)
    tol = REF_TOL[dtype]
    assert out.dtype == dtype and out.shape == weight.shape and out.is_contiguous()
    _assert_close(out, ref_out, tol, "forward")
    torch.testing.assert_close(gw, ref_gw, atol=0, rtol=0)
    assert ga.shape == alpha.shape and ga.dtype == dtype
    _assert_close(ga, ref_ga, tol, "grad alpha")
    if mask is not None:
        assert torch.all(out[~mask] == 0) and torch.all(gw[~mask] == 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_cuda_matches_triton(shape, masked, mode, dtype, monkeypatch):
    reason = _triton_skip_reason()
    if reason is not None:
        pytest.skip(f"Triton backend unavailable: {reason}")
    weight, alpha, mask, grad = _make_case(shape, dtype, mode, masked, seed=1)
    out, gw, ga = _forward_backward("cuda", weight, alpha, mask, grad, LAM, monkeypatch)
    tri_out, tri_gw, tri_ga = _forward_backward("triton", weight, alpha, mask, grad, LAM, monkeypatch)
    tol = TRITON_TOL[dtype]
    _assert_close(out, tri_out, tol, "forward")
    torch.testing.assert_close(gw, tri_gw, atol=0, rtol=0)
    _assert_close(ga, tri_ga, tol, "grad alpha")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(2,), (64, 300), (128, 4100), (1024, 4097)], ids=str)
def test_cuda_sigma_is_the_unbiased_std(shape, dtype):
    weight = (torch.randn(shape, device="cuda", dtype=torch.float64) * 0.05 + 3.0).to(dtype)
    alpha = torch.ones(1, dtype=dtype, device="cuda")
    with use_backend("cuda"):
        _, sigma = noisy_weight_ops.noisy_weight(weight, alpha, LAM, SEED, None)
    expected = weight.double().std()
    assert sigma.dtype == noisy_weight_ops.sigma_dtype(weight) and sigma.shape == () and sigma.is_cuda
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(sigma.double(), expected, atol=0, rtol=rtol)


def test_cuda_sigma_is_zero_for_one_element():
    """std of a single weight is defined as 0: no noise rather than NaN."""
    weight = torch.ones(1, device="cuda")
    with use_backend("cuda"):
        out, sigma = noisy_weight_ops.noisy_weight(weight, torch.ones(1, device="cuda"), 1.0, SEED, None)
    assert sigma.item() == 0
    assert torch.equal(out, weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cuda_ops_match_cpu_kernels(mode, masked, dtype):
    """Forward and backward kernel ops on CUDA against the C++ CPU kernels on the same data."""
    weight, alpha, mask, grad = _make_case((48, 2, 3, 5), dtype, mode, masked, seed=2)
    # eta is float32 on every backend and the device's logf / cosf may round it one
    # ulp away from the CPU's, so float64 results agree to float32 precision only.
    tol = (1e-6, 1e-6) if dtype == torch.float64 else REF_TOL[dtype]
    with use_backend("cuda"):
        out, sigma = noisy_weight_ops.noisy_weight(weight, alpha, LAM, SEED, mask)
        gw, ga = noisy_weight_ops.noisy_weight_backward(grad, alpha, sigma, LAM, SEED, mask, True)
        _, ga_none = noisy_weight_ops.noisy_weight_backward(grad, alpha, sigma, LAM, SEED, mask, False)
    with use_backend("cpp"):
        cpu_out, cpu_sigma = noisy_weight_ops.noisy_weight(_cpu(weight), _cpu(alpha), LAM, SEED, _cpu(mask))
        cpu_gw, cpu_ga = noisy_weight_ops.noisy_weight_backward(
            _cpu(grad), _cpu(alpha), cpu_sigma, LAM, SEED, _cpu(mask), True
        )
    torch.testing.assert_close(sigma.cpu(), cpu_sigma, atol=0, rtol=1e-12 if dtype == torch.float64 else 1e-6)
    _assert_close(out.cpu(), cpu_out, tol, "forward")
    torch.testing.assert_close(gw.cpu(), cpu_gw, atol=0, rtol=0)
    _assert_close(ga.cpu(), cpu_ga, tol, "grad alpha")
    assert ga_none.numel() == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_cuda_lam_zero_is_exact_and_alpha_grad_zero(mode, dtype):
    weight, alpha, mask, grad = _make_case((16, 40), dtype, mode, masked=True, seed=3)
    with use_backend("cuda"):
        out, sigma = noisy_weight_ops.noisy_weight(weight, alpha, 0.0, SEED, mask)
        gw, ga = noisy_weight_ops.noisy_weight_backward(grad, alpha, sigma, 0.0, SEED, mask, True)
        gw2, ga_none = noisy_weight_ops.noisy_weight_backward(grad, alpha, sigma, LAM, SEED, mask, False)
    zero = torch.zeros((), dtype=dtype, device="cuda")
    assert torch.equal(out, torch.where(mask, weight, zero))
    assert torch.equal(gw, torch.where(mask, grad, zero)) and torch.equal(gw2, gw)
    assert ga.shape == alpha.shape and torch.equal(ga, torch.zeros_like(alpha))
    assert ga_none.numel() == 0 and ga_none.dtype == dtype


@pytest.mark.parametrize("mode", MODES)
def test_cuda_is_deterministic(mode):
    weight, alpha, mask, grad = _make_case((64, 5000), torch.float32, mode, masked=True, seed=4)
    results = []
    for _ in range(2):
        with use_backend("cuda"):
            out, sigma = noisy_weight_ops.noisy_weight(weight, alpha, LAM, SEED, mask)
            gw, ga = noisy_weight_ops.noisy_weight_backward(grad, alpha, sigma, LAM, SEED, mask, True)
        results.append((out, sigma, gw, ga))
    for first, second in zip(*results, strict=True):
        assert torch.equal(first, second)


def test_cuda_accepts_non_contiguous_inputs(monkeypatch):
    base, alpha, mask, grad = _make_case((40, 24), torch.float32, "channel", masked=True, seed=5)
    weight = base.t()  # (24, 40), not contiguous
    alpha = _make_alpha("channel", weight.shape, torch.float32)
    mask, grad = mask.t(), grad.t()
    out, gw, ga = _forward_backward("cuda", weight, alpha, mask, grad, LAM, monkeypatch)
    ref_out, ref_gw, ref_ga = _forward_backward("reference", weight, alpha, mask, grad, LAM, monkeypatch)
    _assert_close(out, ref_out, REF_TOL[torch.float32], "forward")
    torch.testing.assert_close(gw, ref_gw, atol=0, rtol=0)
    _assert_close(ga, ref_ga, REF_TOL[torch.float32], "grad alpha")


@pytest.mark.parametrize(
    ("shape", "seed", "offset"),
    [((1,), 0, 0), ((1000, 3), 42, 0), ((1 << 20,), 2**40 + 123, 17), ((4096,), 7, 2**32 - 100)],
    ids=["one", "small", "large", "offset-crosses-2**32"],
)
def test_cuda_philox_normal_matches_cpu(shape, seed, offset):
    with use_backend("cuda"):
        on_gpu = functional.philox_normal(torch.empty(shape, device="cuda"), seed=seed, offset=offset)
    with use_backend("cpp"):
        on_cpu = functional.philox_normal(torch.empty(shape), seed=seed, offset=offset)
    assert on_gpu.dtype == torch.float32 and on_gpu.shape == shape and on_gpu.is_cuda
    # Same Philox bits; only the device's logf / cosf may differ from the CPU's by an ulp.
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-6, rtol=1e-6)
