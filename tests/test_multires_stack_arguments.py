"""The multi-resolution stack's argument checks (the public function, the ops and the C++ kernels)
and its helpers: the clip mask's bit packing and the resize matrices."""

import pytest
import torch
from helpers import require_backend, targets
from test_multires_stack import INTERPOLATIONS, images

import robustkernels
from robustkernels import functional as F
from robustkernels.ops import multires_stack as multires_ops
from robustkernels.ops.resize_tables import resize_matrix
from robustkernels.reference.multires_stack import resize


def test_pack_bits_round_trip():
    bits = torch.rand((3, 2, 5, 13)) > 0.5
    packed = multires_ops.pack_bits(bits)
    assert packed.shape == (3, 2, 5, 2) and packed.dtype == torch.uint8
    assert torch.equal(multires_ops.unpack_bits(packed, 13), bits)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize(("n_in", "n_out"), [(32, 16), (32, 5), (17, 4), (9, 1), (12, 12), (4, 13)])
@pytest.mark.parametrize("antialias", [False, True])
def test_resize_matrix_is_f_interpolate(interpolation, n_in, n_out, antialias):
    antialias = antialias and interpolation != "area" and n_out < n_in
    x = images((2, 3, n_in, 5), torch.float64)
    expected = resize(x, (n_out, 5), interpolation, antialias)
    actual = torch.einsum("oi,bciw->bcow", resize_matrix(n_in, n_out, interpolation, antialias), x)
    torch.testing.assert_close(actual, expected)


X = images((2, 3, 8, 8))


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"x": X.long()}, TypeError, "x"),
        ({"x": X[0]}, ValueError, "x"),
        ({"x": [1.0]}, TypeError, "x"),
        ({"resolutions": ()}, ValueError, "resolutions"),
        ({"resolutions": 4}, ValueError, "resolutions"),
        ({"resolutions": (8, 9)}, ValueError, "resolution"),
        ({"resolutions": (0,)}, ValueError, "resolution"),
        ({"resolutions": (4.5,)}, TypeError, "resolution"),
        ({"resolutions": ((4, 4, 4),)}, TypeError, "resolution"),
        ({"jitter": -1}, ValueError, "jitter"),
        ({"jitter": 1.5}, TypeError, "jitter"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"noise": "0.1"}, TypeError, "noise"),
        ({"noise_kind": "salt"}, ValueError, "noise_kind"),
        ({"contrast": (1.0, 0.5)}, ValueError, "contrast"),
        ({"contrast": 0.5}, TypeError, "contrast"),
        ({"interpolation": "nearest"}, ValueError, "interpolation"),
        ({"antialias": 1}, TypeError, "antialias"),
        ({"adjust_contrast": "yes"}, TypeError, "adjust_contrast"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.0}, TypeError, "seed"),
    ],
)
@pytest.mark.parametrize("target", targets("cpp", "reference"))
def test_bad_arguments(target, kwargs, error, name):
    """Types are checked in the public function, values by the kernels (C++, or Python's)."""
    args = {"x": X, "resolutions": (8, 4), **kwargs}
    with robustkernels.use_backend(target.backend), pytest.raises(error, match=name):
        F.multires_stack(args.pop("x"), args.pop("resolutions"), **args)


def _kernel_args(**changes):
    args = dict(
        x=X, heights=[8, 4], widths=[8, 4], jitter=1, noise=0.1, noise_kind="uniform", contrast_low=0.5,
        contrast_high=1.0, interpolation="bicubic", antialias=False, adjust_contrast=True, seed=0,
    )  # fmt: skip
    args.update(changes)
    return args


@pytest.mark.parametrize(
    ("changes", "error", "name"),
    [
        ({"x": X.long()}, TypeError, "x"),
        ({"x": X[0]}, ValueError, "x"),
        ({"heights": [8, 9]}, ValueError, "resolution"),
        ({"heights": [8, 0]}, ValueError, "resolution"),
        ({"widths": [8]}, ValueError, "widths"),
        ({"heights": [], "widths": []}, ValueError, "heights"),
        ({"jitter": -1}, ValueError, "jitter"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"noise": float("nan")}, ValueError, "noise"),
        ({"noise_kind": "salt"}, ValueError, "noise_kind"),
        ({"contrast_low": 1.5}, ValueError, "contrast"),
        ({"interpolation": "nearest"}, ValueError, "interpolation"),
        ({"seed": -2}, ValueError, "seed"),
    ],
)
def test_cpp_kernel_checks_its_arguments(changes, error, name):
    """The C++ kernel ops are reachable directly through torch.ops; they check the values."""
    require_backend("cpp")
    with pytest.raises(error, match=name):
        torch.ops.robustkernels.multires_stack_fwd_kernel(**_kernel_args(**changes))


def test_backward_checks_the_mask():
    require_backend("cpp")
    grad = torch.randn(2, 6, 8, 8)
    settings = ([8, 4], [8, 4], 1, 0.5, 1.0, "bicubic", False, True, 0)
    with pytest.raises(ValueError, match="clip_mask"):
        multires_ops.multires_stack_backward(grad, torch.zeros(2, 6, 8, 8, dtype=torch.uint8), X, *settings)
    with pytest.raises(ValueError, match="clip_mask"):
        torch.ops.robustkernels.multires_stack_bwd_kernel(grad, torch.zeros(2, 6, 8, 1), X, *settings)
    with pytest.raises(ValueError, match="x"):
        torch.ops.robustkernels.multires_stack_bwd_kernel(
            grad, torch.zeros(2, 6, 8, 1, dtype=torch.uint8), X[:, :2], *settings
        )
