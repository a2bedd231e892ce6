"""The layer ops' direct Python entry points (robustkernels/ops/direct_calls.py,
csrc/python_module.cpp): the same results as torch.ops, and torch.ops wherever
__torch_function__ must see the call."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

import robustkernels.functional as F
from robustkernels import _extension
from robustkernels.ops import direct_calls

pytestmark = pytest.mark.skipif(not _extension.is_loaded(), reason="needs robustkernels._C")

OPS = torch.ops.robustkernels


def _cases():
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 2, 6, 6, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    xl, wl = torch.randn(3, 5, generator=gen), torch.randn(4, 5, generator=gen)
    alpha, seed = torch.full((4,), 0.3), torch.tensor(11)
    bank, route = torch.randn(2, 4, 2, 3, 3, generator=gen), torch.tensor([1, 0, 1])
    linear_bank = torch.randn(2, 4, 5, generator=gen)
    conv = ([1, 1], [1, 1], [1, 1], 1)
    return {
        "noisy_conv2d": (x, w, None, alpha, 1.0, 5, None, *conv, seed),
        "noisy_linear": (xl, wl, torch.zeros(4), alpha, 0.5, 5, None, None),
        "path_conv2d": (x, bank, None, None, None, [0.0, 0.0], [3, 4], route, [], *conv, None),
        "path_linear": (
            xl,
            linear_bank,
            None,
            None,
            torch.full((2, 1), 0.2),
            [0.0, 1.0],
            [3, 4],
            None,
            [2, 1],
            seed,
        ),
    }


@pytest.mark.parametrize("name", ["noisy_conv2d", "noisy_linear", "path_conv2d", "path_linear"])
def test_direct_call_equals_torch_ops(name):
    args = _cases()[name]
    expected = getattr(OPS, name).default(*args)
    expected = expected[0] if name.startswith("path") else expected
    torch.testing.assert_close(getattr(direct_calls, name)(*args), expected, rtol=0, atol=0)


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def test_torch_function_mode_sees_the_op():
    """An active torch function mode makes the direct entry return NotImplemented: the call goes
    through torch.ops, which the mode sees (as FX tracing or a device context need)."""
    args = _cases()
    x, w, _, alpha = args["noisy_conv2d"][:4]
    with _Recorder() as mode:
        y = F.noisy_conv2d(x, w, None, alpha, lam=1.0, seed=5, padding=1)
        F.path_conv2d(x, args["path_conv2d"][1], args["path_conv2d"][7], padding=1)
    assert OPS.noisy_conv2d.default in mode.seen and OPS.path_conv2d.default in mode.seen
    torch.testing.assert_close(y, OPS.noisy_conv2d.default(*args["noisy_conv2d"][:11], None))


def test_wrong_type_names_the_argument():
    x, w, _, alpha = _cases()["noisy_conv2d"][:4]
    with pytest.raises(TypeError, match="lam must be a float"):
        F.noisy_conv2d(x, w, None, alpha, lam="1", seed=5)
    with pytest.raises(TypeError, match=r"weight must be a torch\.Tensor"):
        F.noisy_conv2d(x, [1.0], None, alpha, lam=1.0, seed=5)
