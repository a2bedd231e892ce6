"""Backend selection, the pure-Python fallback and `python -m robustkernels.info`."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

import robustkernels
from robustkernels import _extension
from robustkernels import functional as F
from robustkernels.ops import backend

CPU = torch.device("cpu")


def test_default_cpu_backend_is_cpp_when_built():
    assert _extension.is_loaded(), (
        f"the C++ extension should be built in the test environment: {_extension.load_error}"
    )
    assert backend.select("noisy_weight", CPU) == "cpp"


def test_use_backend_overrides_and_restores():
    with robustkernels.use_backend("reference"):
        assert backend.select("noisy_weight", CPU) == "reference"
    assert backend.select("noisy_weight", CPU) == "cpp"


def test_explicit_backend_that_cannot_run_raises():
    with robustkernels.use_backend("cuda"), pytest.raises(RuntimeError, match="cuda"):
        F.noisy_weight(torch.randn(3, 3), torch.ones(1), lam=1.0, seed=0)
    with pytest.raises(ValueError, match="backend"):
        robustkernels.use_backend("opencl").__enter__()


def test_environment_variable_is_validated(monkeypatch):
    monkeypatch.setenv("ROBUSTKERNELS_BACKEND", "reference")
    assert backend.select("noisy_weight", CPU) == "reference"
    monkeypatch.setenv("ROBUSTKERNELS_BACKEND", "fast")
    with pytest.raises(ValueError, match="ROBUSTKERNELS_BACKEND"):
        backend.select("noisy_weight", CPU)


def test_missing_extension_falls_back_to_reference_and_says_why(monkeypatch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(
        _extension, "load_error", "installed with ROBUSTKERNELS_BUILD_EXT=0 (pure-Python install)"
    )
    monkeypatch.setattr(backend, "_warned", set())
    monkeypatch.setattr(backend, "_defaults", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert backend.select("noisy_weight", CPU) == "reference"
    assert any("ROBUSTKERNELS_BUILD_EXT=0" in str(w.message) for w in caught)
    weight, alpha = torch.randn(4, 3), torch.ones(1)
    expected = robustkernels.reference.noisy_weight(weight, alpha, 1.0, 5)
    torch.testing.assert_close(F.noisy_weight(weight, alpha, lam=1.0, seed=5), expected)
    # the routed layers: the per-sample reference, seeds offset by the seed tensor as the op does
    bank, x, route = torch.randn(2, 4, 3, 3, 3), torch.randn(3, 3, 5, 5), torch.tensor([1, 0, 1])
    alphas, lams, seeds = torch.full((2, 1), 0.5), [1.0, 0.0], [7, 8]
    noise = (alphas, lams, torch.tensor(7))
    expected = robustkernels.reference.path_conv2d(x, bank, None, route, lams, seeds, alphas, padding=1)
    torch.testing.assert_close(F.path_conv2d(x, bank, route, noise=noise, padding=1), expected)
    expected = robustkernels.reference.path_linear(
        x[:, :, 0, 0], bank[:, :, :, 0, 0], None, [1, 2], lams, seeds, alphas
    )
    torch.testing.assert_close(
        F.path_linear(x[:, :, 0, 0], bank[:, :, :, 0, 0], [1, 2], noise=noise), expected
    )


def test_import_does_not_initialise_cuda():
    code = "import torch, robustkernels, robustkernels.nn; print(torch.cuda.is_initialized())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_info_reports_backends_of_the_noisy_weight_op():
    result = subprocess.run(
        [sys.executable, "-m", "robustkernels.info"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TRITON_INTERPRET": "1"},
    )
    out = result.stdout
    assert "robustkernels._C: loaded" in out
    assert "noisy_weight" in out
    assert "cpp       yes" in out
    assert "triton    yes" in out


def test_the_choice_holds_for_forward_and_backward_inside_the_block(monkeypatch):
    """use_backend is process-wide (the backward of a GPU tensor runs on autograd's own thread):
    a forward and backward inside the block both run the chosen kernels, through the same C++
    composite op and autograd as the default path."""
    calls = []
    original = backend.select

    def recording_select(op, device):
        name = original(op, device)
        calls.append((op, name))
        return name

    monkeypatch.setattr(backend, "select", recording_select)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    x = torch.randn(2, 3, 5, 5)
    with robustkernels.use_backend("reference"):
        # alpha's gradient needs the weight backward kernel (dW alone is dW' without a mask)
        y = F.noisy_conv2d(x, weight, None, torch.ones(1, requires_grad=True), lam=1.0, seed=3)
        y.sum().backward()
    assert calls and all(name == "reference" for _, name in calls)
    assert ("noisy_weight_backward", "reference") in calls


def test_default_path_calls_no_python_kernel(monkeypatch):
    """Outside use_backend the C++ op runs the device kernel: no Python backend selection."""
    calls = []
    monkeypatch.setattr(backend, "select", lambda op, device: calls.append(op))
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = F.noisy_conv2d(torch.randn(2, 3, 5, 5), weight, None, torch.ones(1), lam=1.0, seed=3)
    y.sum().backward()
    assert calls == [] and weight.grad is not None
    bank, alpha = torch.randn(2, 4, 3, 3, 3, requires_grad=True), torch.ones(2, 1, requires_grad=True)
    x = torch.randn(3, 3, 5, 5, requires_grad=True)
    for route in (torch.tensor([1, 0, 1]), [1, 2]):  # sorted on the device, and segments
        F.path_conv2d(x, bank, route, noise=(alpha, 1.0, 3)).sum().backward()
    F.path_linear(x[:, :, 0, 0], bank[:, :, :, 0, 0], torch.tensor([0, 0, 1])).sum().backward()
    assert calls == [] and bank.grad is not None and alpha.grad is not None


def test_one_list_of_ops_feeds_functional_and_info():
    from robustkernels.info import report
    from robustkernels.ops.catalog import PUBLIC_OPS

    public = {name for name in dir(F) if not name.startswith("_") and callable(getattr(F, name))}
    public -= {"torch", "F"}
    assert set(F.__all__) == set(PUBLIC_OPS)
    assert {name for name in public if getattr(F, name).__module__ == F.__name__} == set(PUBLIC_OPS)
    listed = report()
    for op in PUBLIC_OPS:
        assert f"  {op}: default = " in listed, f"info omits {op}"
