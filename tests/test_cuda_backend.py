"""The hand-written CUDA kernels (backend "cuda") against the reference and the C++ CPU kernels, and
the GPU kernels (CUDA and Triton) on shapes a GPU launch splits in several ways.

Runs only on a machine with a CUDA device and a robustkernels._C built with the
CUDA sources (a CUDA build of torch and nvcc at build time). The common cases of every backend,
CUDA included, are in test_noisy_weight.py.
"""

import pytest
import torch
from helpers import HALF_DTYPES, assert_half_close

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

FLOAT32_TOL = (1e-5, 1e-5)  # (atol, rtol), atol scaled by the largest expected value


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


def _assert_matches(actual, same_dtype, oracle, what):
    """Half precision by the rule of helpers.assert_half_close; float32 to FLOAT32_TOL of the oracle."""
    if actual.dtype in HALF_DTYPES:
        assert_half_close(actual, same_dtype, oracle, what)
    else:
        _assert_close(actual.double(), oracle, FLOAT32_TOL, what)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kernel", ["cuda", "triton"])
def test_gpu_kernels_match_reference(kernel, shape, masked, mode, dtype, monkeypatch):
    """The reference in the same dtype and in float64 on the same values (the oracle)."""
    if kernel == "triton" and _triton_skip_reason() is not None:
        pytest.skip(f"Triton backend unavailable: {_triton_skip_reason()}")
    weight, alpha, mask, grad = _make_case(shape, dtype, mode, masked)
    out, gw, ga = _forward_backward(kernel, weight, alpha, mask, grad, LAM, monkeypatch)
    same = _forward_backward("reference", weight, alpha, mask, grad, LAM, monkeypatch)
    oracle = _forward_backward(
        "reference", weight.double(), alpha.double(), mask, grad.double(), LAM, monkeypatch
    )
    assert out.dtype == dtype and out.shape == weight.shape and out.is_contiguous()
    _assert_matches(out, same[0], oracle[0], "forward")
    torch.testing.assert_close(gw, same[1], atol=0, rtol=0)  # W' is linear in W: dW = M * grad
    assert ga.shape == alpha.shape and ga.dtype == dtype
    _assert_matches(ga, same[2], oracle[2], "grad alpha")
    if mask is not None:
        assert torch.all(out[~mask] == 0) and torch.all(gw[~mask] == 0)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_cuda_ops_match_cpu_kernels(mode, masked, dtype):
    """Forward and backward kernel ops on CUDA against the C++ CPU kernels on the same data (half
    precision: test_gpu_kernels_match_reference)."""
    weight, alpha, mask, grad = _make_case((48, 2, 3, 5), dtype, mode, masked, seed=2)
    # eta is float32 on every backend and the device's logf / cosf may round it one
    # ulp away from the CPU's, so float64 results agree to float32 precision only.
    tol = (1e-6, 1e-6) if dtype == torch.float64 else FLOAT32_TOL
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
    _assert_close(out, ref_out, FLOAT32_TOL, "forward")
    torch.testing.assert_close(gw, ref_gw, atol=0, rtol=0)
    _assert_close(ga, ref_ga, FLOAT32_TOL, "grad alpha")


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
