"""No layer or op synchronises the host with the GPU in its forward or backward (the op pattern's
rule): each runs under torch.cuda.set_sync_debug_mode("error"), which raises on a blocking copy,
.item(), .tolist() or any other call that waits for the stream.

The one documented host read is a route tensor's group sizes (csrc/ops/path_conv.cpp): grouping a
batch by a per-sample route needs the sizes on the host. Its test checks that it is still the only
one. Runs only on a machine with a CUDA device (whichever GPU kernels are built: CUDA C++ or Triton).
"""

import warnings

import pytest
import torch

import robustkernels.functional as rkF
from robustkernels.nn import (
    EnsembleConv2d,
    GatedConv2d,
    MaskedExpertConv2d,
    MultiResStack,
    NoisyConv2d,
    NoisyLinear,
    PathBatchNorm2d,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _without_sync(step) -> None:
    """step() once to warm up (first launches may compile, allocate or copy constants), then
    again with every host sync an error."""
    step()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()


def _layer_step(layer: torch.nn.Module, *shape: int):
    x = torch.randn(*shape, device="cuda", requires_grad=True)

    def step():
        layer(x).square().sum().backward()

    return step


LAYERS = {
    "noisy_conv2d": lambda: (NoisyConv2d(8, 8, 3, padding=1), (4, 8, 8, 8)),
    "noisy_linear": lambda: (NoisyLinear(16, 8), (4, 16)),
    "float_noisy_path": lambda: (MaskedExpertConv2d(8, 8, 3, padding=1, density=None, route=1), (4, 8, 8, 8)),
    "float_split": lambda: (
        MaskedExpertConv2d(8, 8, 3, padding=1, density=None, route="split"),
        (4, 8, 8, 8),
    ),
    "smart_masks": lambda: (MaskedExpertConv2d(8, 8, 3, padding=1, route=1), (4, 8, 8, 8)),
    "gated_one_path": lambda: (GatedConv2d(8, 8, 3, padding=1, route=1), (4, 8, 8, 8)),
    "ensemble_split": lambda: (EnsembleConv2d(8, 8, 3, padding=1, members=3), (12, 8, 8, 8)),
    "path_batchnorm": lambda: (PathBatchNorm2d(8, 2, route=1), (4, 8, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_forward_backward_without_sync(name):
    layer, shape = LAYERS[name]()
    _without_sync(_layer_step(layer.cuda().train(), *shape))


def test_multires_stack_without_sync():
    stack = MultiResStack((8, 4, 2))
    _without_sync(_layer_step(stack, 2, 3, 8, 8))


def test_crossmax_without_sync():
    logits = torch.randn(5, 4, 10, device="cuda", requires_grad=True)
    _without_sync(lambda: rkF.crossmax(logits, k=3).square().sum().backward())


def test_pgd_step_without_sync():
    x_adv, grad, x_orig = (torch.rand(4, 3, 8, 8, device="cuda") for _ in range(3))
    step = torch.full((4,), 0.01, device="cuda")
    _without_sync(lambda: rkF.pgd_step(x_adv, grad, x_orig, step=step, eps=0.03))


def test_route_tensor_group_sizes_are_the_one_host_read():
    layer = GatedConv2d(8, 8, 3, padding=1).cuda()
    x = torch.randn(4, 8, 8, 8, device="cuda")
    route = torch.tensor([0, 1, 1, 0], device="cuda")
    rkF.path_conv2d(x, layer.weight, route, padding=1)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rkF.path_conv2d(x, layer.weight, route, padding=1)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
