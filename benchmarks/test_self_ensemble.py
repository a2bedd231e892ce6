"""Benchmark of one attack step (forward + backward to the input) of the multi-resolution
self-ensemble on a ResNet-18 (CIFAR stem) at 32 x 32, batch 32: the stack (32, 16, 8, 4), the
backbone tapped at every block of layer3 and layer4 and at the pooled features, flattened
BN1d + Linear heads, CrossMax k = 3 over the heads and the backbone's logits.

Variants, side by side in one run (`python benchmarks/report.py -k self_ensemble`):
- robustkernels: the fused pipeline (the multires_stack op, IntermediateHeads' one batch
  norm over all heads, the crossmax op);
- eager_notebook: the same pipeline in plain torch ops as the notebook writes it: the
  reference stack with torch's generator (vectorised, so a stronger baseline than the
  notebook's per-image loop), one BatchNorm1d + Linear module per head, the reference CrossMax;
- backbone_only: the backbone's forward + backward on a ready stack (no heads, no CrossMax):
  robustkernels minus this is everything but the backbone.
"""

import pytest
import torch
from timing import DEVICE, pedantic, sync
from torch import nn

from python_api.models import SelfEnsemble, resnet18, tap_features, to_multires_model
from python_api.reproduce.eee import _head_sizes, _taps
from robustkernels import reference
from robustkernels.nn import IntermediateHeads

BATCH, CLASSES, RESOLUTIONS = 32, 10, (32, 16, 8, 4)


def _build():
    torch.manual_seed(0)
    backbone = to_multires_model(resnet18(num_classes=CLASSES), RESOLUTIONS).to(DEVICE).eval()
    taps = _taps(backbone.net)
    x = torch.rand(BATCH, 3, 32, 32, device=DEVICE)
    heads = IntermediateHeads(_head_sizes(backbone, taps, x), CLASSES, pool=None).to(DEVICE).eval()
    separate = [nn.Sequential(n, lin) for n, lin in zip(heads.norms, heads.linears, strict=True)]
    return SelfEnsemble(backbone, heads, taps), separate, x


ENSEMBLE, SEPARATE_HEADS, X = _build()
Y = torch.arange(BATCH, device=DEVICE) % CLASSES


def _eager_notebook(x):
    generator = torch.Generator(device=x.device).manual_seed(1)
    stacked = reference.multires_stack(x, RESOLUTIONS, generator=generator)
    net = ENSEMBLE.backbone.net
    with tap_features(net, ENSEMBLE.taps) as tapped:
        logits = net(stacked)
    heads = [head(tapped[name].flatten(1)) for head, name in zip(SEPARATE_HEADS, ENSEMBLE.taps, strict=True)]
    return reference.crossmax(torch.stack([*heads, logits]), 3, "kth")


STACKED = ENSEMBLE.backbone.stack(X, 1).detach()
VARIANTS = {
    "robustkernels": (lambda x: ENSEMBLE(x), X),
    "eager_notebook": (_eager_notebook, X),
    "backbone_only": (lambda s: ENSEMBLE.backbone.net(s), STACKED),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_self_ensemble_attack_step(benchmark, variant):
    fn, source = VARIANTS[variant]
    for p in ENSEMBLE.parameters():
        p.requires_grad_(False)  # as attacks run: gradients to the input only

    def step():
        x = source.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(fn(x), Y)
        torch.autograd.grad(loss, x)
        sync()

    step()
    benchmark.group = "self-ensemble attack step"
    benchmark.extra_info.update(
        op="self_ensemble", case=f"resnet18-{BATCH}x3x32x32", passes="forward_backward", variant=variant
    )
    pedantic(benchmark, step, rounds=7, iterations=1, warmup_rounds=1)
