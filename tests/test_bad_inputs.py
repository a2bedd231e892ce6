"""Bad arguments raise clear errors naming the argument, from Python and from C++, never crash."""

import pytest
import torch
from helpers import require_backend

from robustkernels import functional as F

W = torch.randn(4, 3, 3, 3)
A = torch.full((1,), 0.25)
X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"weight": W.long()}, TypeError, "weight"),
        ({"weight": torch.empty(0, 3, 3, 3)}, ValueError, "weight"),
        ({"weight": torch.tensor(1.0)}, ValueError, "weight"),
        ({"weight": [1.0, 2.0]}, TypeError, "weight"),
        ({"alpha": A.double()}, TypeError, "alpha"),
        ({"alpha": torch.ones(3)}, ValueError, "alpha"),
        ({"alpha": torch.ones(4, 3)}, ValueError, "alpha"),
        ({"mask": torch.ones(4, 3, 3, 3)}, TypeError, "mask"),
        ({"mask": torch.ones(4, 3, 3, dtype=torch.bool)}, ValueError, "mask"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**63}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"lam": "1"}, TypeError, "lam"),
    ],
)
def test_noisy_weight_bad_arguments(kwargs, error, name):
    args = {"weight": W, "alpha": A, "lam": 1.0, "seed": 0, "mask": None, **kwargs}
    with pytest.raises(error, match=name):
        F.noisy_weight(args.pop("weight"), args.pop("alpha"), **args)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"x": X.double()}, TypeError, "x"),
        ({"x": torch.randn(8, 8)}, ValueError, "x"),
        ({"x": torch.randn(2, 5, 8, 8)}, ValueError, "channels"),
        ({"x": torch.randn(0, 3, 8, 8)}, None, None),  # an empty batch is valid, as for F.conv2d
        ({"bias": torch.ones(3)}, ValueError, "bias"),
        ({"bias": torch.ones(4, dtype=torch.float64)}, TypeError, "bias"),
        ({"weight": torch.randn(4, 3, 3)}, ValueError, "weight"),
        ({"padding": "full"}, ValueError, "padding"),
        ({"groups": 2}, ValueError, "groups"),
    ],
)
def test_noisy_conv2d_bad_arguments(kwargs, error, name):
    args = {"x": X, "weight": W, "bias": None, "alpha": A, "lam": 1.0, "seed": 0, **kwargs}
    tensors = [args.pop(key) for key in ("x", "weight", "bias", "alpha")]
    if error is None:
        assert F.noisy_conv2d(*tensors, **args).shape[0] == 0
        return
    with pytest.raises(error, match=name):
        F.noisy_conv2d(*tensors, **args)


def test_noisy_linear_bad_arguments():
    with pytest.raises(ValueError, match="features"):
        F.noisy_linear(torch.randn(2, 5), torch.randn(3, 4), None, A, lam=1.0, seed=0)
    with pytest.raises(ValueError, match="weight"):
        F.noisy_linear(torch.randn(2, 4), torch.randn(3, 4, 1), None, A, lam=1.0, seed=0)
    with pytest.raises(ValueError, match="x"):
        F.noisy_linear(torch.tensor(1.0), torch.randn(3, 4), None, A, lam=1.0, seed=0)


def test_device_mismatch_is_named():
    meta_alpha = torch.empty(1, device="meta")
    with pytest.raises(ValueError, match="alpha"):
        F.noisy_weight(W, meta_alpha, lam=1.0, seed=0)


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((W.long(), A, 1.0, 0, None), TypeError, "weight"),
        ((W, torch.ones(3), 1.0, 0, None), ValueError, "alpha"),
        ((W, A.double(), 1.0, 0, None), TypeError, "alpha"),
        ((W, A, 1.0, 0, torch.ones(4, 3, 3, 3)), TypeError, "mask"),
        ((W, A, 1.0, 0, torch.ones(2, dtype=torch.bool)), ValueError, "mask"),
        ((torch.empty(0), A, 1.0, 0, None), ValueError, "weight"),
    ],
)
def test_cpp_kernel_checks_its_arguments(args, error, name):
    """The C++ kernel ops are reachable directly through torch.ops; they check too."""
    require_backend("cpp")
    with pytest.raises(error, match=name):
        torch.ops.robustkernels.noisy_weight_fwd_kernel(*args)


def test_cpp_backward_kernel_checks_sigma():
    require_backend("cpp")
    with pytest.raises(ValueError, match="sigma"):
        torch.ops.robustkernels.noisy_weight_bwd_kernel(W, A, torch.ones(2), 1.0, 0, None, True)


def test_philox_bad_offset():
    require_backend("cpp")
    with pytest.raises(ValueError, match="offset"):
        torch.ops.robustkernels.philox_normal_kernel(torch.empty(3), 0, -1)
