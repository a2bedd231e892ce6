"""The layer ops' autograd nodes (csrc/ops/autograd_nodes.h, noisy_layers.cpp,
path_conv_autograd.cpp): what torch::autograd::Function gave them, kept by the typed nodes."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import robustkernels.functional as F
from robustkernels import _extension

pytestmark = pytest.mark.skipif(not _extension.is_loaded(), reason="needs robustkernels._C")


def _layers():
    w, a = torch.randn(4, 3, 3, 3, requires_grad=True), torch.full((1,), 0.3, requires_grad=True)
    wl, bank = torch.randn(4, 5, requires_grad=True), torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    linear_bank, route = torch.randn(2, 4, 5, requires_grad=True), torch.tensor([1, 0])
    return {
        "noisy_conv2d": (lambda x: F.noisy_conv2d(x, w, None, a, lam=1.0, seed=3, padding=1), (2, 3, 6, 6)),
        "noisy_linear": (lambda x: F.noisy_linear(x, wl, None, a, lam=1.0, seed=3), (2, 5)),
        "path_conv2d": (lambda x: F.path_conv2d(x, bank, route, padding=1), (2, 3, 6, 6)),
        "path_linear": (lambda x: F.path_linear(x, linear_bank, route), (2, 5)),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_forward_mode_ad_raises(name):
    layer, shape = _layers()[name]
    x = torch.randn(shape)
    with fwAD.dual_level(), pytest.raises(RuntimeError, match=f"{name}: forward-mode AD"):
        layer(fwAD.make_dual(x, torch.ones_like(x)))


@pytest.mark.parametrize("name", list(_layers()))
def test_input_modified_in_place_before_backward_raises(name):
    """x is saved as a SavedVariable: autograd's version check still catches an in-place change."""
    layer, shape = _layers()[name]
    x = torch.randn(shape, requires_grad=True)
    inner = x * 1.0
    y = layer(inner)
    inner.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("name", list(_layers()))
def test_backward_twice_needs_retain_graph(name):
    """The saved tensors are released after a backward, as for a native op."""
    layer, shape = _layers()[name]
    y = layer(torch.randn(shape, requires_grad=True)).sum()
    y.backward(retain_graph=True)
    y.backward()
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        y.backward()
