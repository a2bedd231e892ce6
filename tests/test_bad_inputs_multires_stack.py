"""Bad arguments of the multi-resolution stack ops (robustkernels/ops/multires_stack.py).

CASES: the ops' cases for the bad-argument table (tests/bad_inputs.py runs them in a child process
per backend), then the functional layer's checks.
"""

import pytest
import torch
from bad_inputs import Builder, X, check_op, noncontiguous, randn, settings

from robustkernels import functional as F


def _multires_backward_cases(b: Builder, grad_name: str) -> None:
    grad, clip_mask = b.good[grad_name], b.good["clip_mask"]
    b.bad("integer grad", TypeError, **{grad_name: grad.long()})
    b.bad("channels not a multiple of the views", ValueError, **{grad_name: grad[:, :5]})
    b.bad("float clip_mask", ValueError, clip_mask=clip_mask.float())
    b.bad("clip_mask shape", ValueError, clip_mask=clip_mask[:, :3])
    b.elsewhere("clip_mask", clip_mask)
    b.bad("x not the forward's input", ValueError, "x", x=b.good["x"][:, :2])
    b.accepts("empty batch", **{grad_name: grad[:0]}, clip_mask=clip_mask[:0], x=b.good["x"][:0])


def _seed_tensor_cases(b: Builder) -> None:
    if b.op in ("multires_stack", "multires_stack_backward"):  # the kernels take the resolved seed
        b.bad("int32 seed tensor", TypeError, seed_tensor=torch.tensor(5, dtype=torch.int32))
        b.bad("seed + seed tensor negative", ValueError, "seed", seed_tensor=torch.tensor(-1))
        b.accepts("seed tensor", seed_tensor=torch.tensor(5))


def _multires_stack(op, device, cases):
    x = randn(device, 2, 3, 8, 8).clamp(0, 1)
    good = {"x": x, "heights": [8, 4], "widths": [8, 4], "jitter": 1, "noise": 0.1, "noise_kind": "uniform"}
    good |= {"contrast_low": 0.5, "contrast_high": 1.0, "interpolation": "bicubic", "antialias": False}
    good |= {"adjust_contrast": True, "seed": 0}
    b = Builder(op, device, cases, good)
    b.bad("integer x", TypeError, x=x.long())
    b.bad("3-D x", ValueError, x=x[0])
    b.bad("heights and widths lengths", ValueError, widths=[8])
    b.bad("resolution past the image", ValueError, "resolution", heights=[8, 9])
    b.bad("negative jitter", ValueError, jitter=-1)
    b.bad("unknown noise kind", ValueError, noise_kind="salt")
    b.bad("contrast low > high", ValueError, "contrast", contrast_low=1.5)
    b.bad("unknown interpolation", ValueError, interpolation="nearest")
    b.bad("negative seed", ValueError, seed=-1)
    _seed_tensor_cases(b)
    b.accepts("empty batch", x=x[:0])
    b.accepts("non-contiguous x", x=noncontiguous(x))


def _multires_stack_backward(op, device, cases):
    grad = randn(device, 2, 6, 8, 8)
    clip_mask = torch.zeros(2, 6, 8, 1, dtype=torch.uint8, device=device)
    x = randn(device, 2, 3, 8, 8).clamp(0, 1)
    grad_name = "grad_out" if op.endswith("_kernel") else "grad"
    good = {grad_name: grad, "clip_mask": clip_mask, "x": x, "heights": [8, 4], "widths": [8, 4], "jitter": 1}
    good |= {"contrast_low": 0.5, "contrast_high": 1.0, "interpolation": "bicubic", "antialias": False}
    good |= {"adjust_contrast": True, "seed": 0}
    b = Builder(op, device, cases, good)
    _multires_backward_cases(b, grad_name)
    b.bad("resolution past the image", ValueError, "resolution", heights=[8, 9])
    b.bad("negative seed", ValueError, seed=-1)
    _seed_tensor_cases(b)


# the kernel ops take the op's arguments (they build their resize tables and noise offsets)
CASES = {
    "multires_stack_fwd_kernel": _multires_stack,
    "multires_stack_fwd_python": _multires_stack,
    "multires_stack": _multires_stack,
    "multires_stack_bwd_kernel": _multires_stack_backward,
    "multires_stack_bwd_python": _multires_stack_backward,
    "multires_stack_backward": _multires_stack_backward,
}


@pytest.mark.parametrize(("op", "device", "backend"), settings(CASES))
def test_op_rejects_bad_arguments(op, device, backend):
    check_op(op, device, backend)


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: F.multires_stack(X, (8, 9), seed=0), ValueError, "resolution"),
        (lambda: F.multires_stack(X[0], (8, 4), seed=0), ValueError, "x"),
    ],
)
def test_functional_names_the_bad_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
