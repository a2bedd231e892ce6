"""Bad arguments of the noisy conv / linear layer ops (robustkernels/ops/noisy_layers.py,
csrc/ops/noisy_layers.cpp).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import A, Builder, W, X, check_op, randn, settings

from robustkernels import functional as F


def _noisy_layer_cases(b: Builder, x: torch.Tensor) -> None:
    w, a = b.good["weight"], b.good["alpha"]
    b.bad("x dtype", TypeError, x=x.double())
    b.bad("x rank", ValueError, x=x.reshape(-1))
    b.elsewhere("x", x)
    b.bad("integer weight", TypeError, weight=w.long())
    b.bad("alpha with 3 values for 4 channels", ValueError, alpha=torch.ones(3, device=b.device))
    b.elsewhere("alpha", a)
    b.bad("bias shape", ValueError, bias=torch.ones(3, device=b.device))
    b.bad("bias dtype", TypeError, bias=torch.ones(4, dtype=torch.float64, device=b.device))
    b.elsewhere("bias", torch.ones(4, device=b.device))
    b.bad("mask shape", ValueError, mask=torch.ones(4, dtype=torch.bool, device=b.device))
    b.accepts("empty batch", x=x[:0])


def _noisy_conv2d(op, device, cases):
    x = randn(device, 2, 3, 8, 8)
    good = {
        "x": x,
        "weight": randn(device, 4, 3, 3, 3),
        "bias": None,
        "alpha": torch.full((1,), 0.25, device=device),
    }
    good |= {"lam": 1.0, "seed": 0, "mask": None, "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1]}
    b = Builder(op, device, cases, {**good, "groups": 1})
    _noisy_layer_cases(b, x)
    b.bad("x channels", ValueError, "channels", x=x[:, :2])
    b.bad("groups", ValueError, groups=2)
    b.bad("3-D weight", ValueError, weight=good["weight"][0])


def _noisy_linear(op, device, cases):
    x = randn(device, 2, 5)
    good = {
        "x": x,
        "weight": randn(device, 4, 5),
        "bias": None,
        "alpha": torch.full((1,), 0.25, device=device),
    }
    b = Builder(op, device, cases, {**good, "lam": 1.0, "seed": 0, "mask": None})
    _noisy_layer_cases(b, x)
    b.bad("x features", ValueError, "features", x=x[:, :4])
    b.bad("3-D weight", ValueError, weight=good["weight"][None])


def _noisy_layer_backward_cases(b: Builder, x: torch.Tensor) -> None:
    w, a, g = b.good["weight"], b.good["alpha"], b.good["grad_y"]
    b.bad("integer weight", TypeError, weight=w.long())
    b.bad("alpha with 3 values for 4 channels", ValueError, alpha=torch.ones(3, device=b.device))
    b.elsewhere("alpha", a)
    b.bad("mask shape", ValueError, mask=torch.ones(4, dtype=torch.bool, device=b.device))
    b.bad("negative seed", ValueError, seed=-1)
    b.bad("no weight for dx", ValueError, weight=None)
    b.bad("no x for dW", ValueError, x=None)
    b.bad("int32 seed tensor", TypeError, seed_tensor=torch.tensor(5, dtype=torch.int32))
    b.accepts("only dW, without the weight", weight=None, output_mask=[False, True, False, False])
    b.accepts("only dx, without x", x=None, output_mask=[True, False, False, False])
    b.accepts("a seed tensor", seed_tensor=torch.tensor(5))
    b.accepts("empty batch", x=x[:0], grad_y=g[:0])


def _noisy_conv2d_backward(op, device, cases):
    x = randn(device, 2, 3, 8, 8)
    good = {"grad_y": randn(device, 2, 4, 8, 8), "x": x, "weight": randn(device, 4, 3, 3, 3)}
    good |= {"alpha": torch.full((1,), 0.25, device=device), "lam": 1.0, "seed": 0, "mask": None}
    good |= {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "groups": 1, "seed_tensor": None}
    good |= {"x_size": [2, 3, 8, 8], "weight_size": [4, 3, 3, 3], "has_bias": True}
    b = Builder(op, device, cases, {**good, "output_mask": [True, True, True, True]})
    _noisy_layer_backward_cases(b, x)


def _noisy_linear_backward(op, device, cases):
    x = randn(device, 2, 5)
    good = {"grad_y": randn(device, 2, 4), "x": x, "weight": randn(device, 4, 5)}
    good |= {"alpha": torch.full((1,), 0.25, device=device), "lam": 1.0, "seed": 0, "mask": None}
    good |= {"seed_tensor": None, "weight_size": [4, 5], "has_bias": True}
    b = Builder(op, device, cases, {**good, "output_mask": [True, True, True, True]})
    _noisy_layer_backward_cases(b, x)


CASES = {
    "noisy_conv2d": _noisy_conv2d,
    "noisy_linear": _noisy_linear,
    "noisy_conv2d_backward": _noisy_conv2d_backward,
    "noisy_linear_backward": _noisy_linear_backward,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


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
