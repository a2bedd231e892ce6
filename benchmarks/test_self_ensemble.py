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

On a CPU the backbone is nearly all of the step, so the difference of two whole steps measures
the rest poorly. `test_self_ensemble_parts` times everything but the backbone directly, fused
against eager: the stack's forward and its backward (from a fixed gradient standing in for the
backbone's), then the heads and CrossMax forward and backward from the tapped features and
logits of one forward (to their gradients, which the backbone's backward would take).
"""

import pytest
import torch
import torch.nn.functional as F
from timing import DEVICE, pedantic, sync
from torch import nn

from python_api.models import SelfEnsemble, resnet18, tap_features, to_multires_model
from python_api.models.self_ensemble import aggregate
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


def _tapped():
    """The tapped feature maps and the logits of one forward on STACKED (the heads' inputs)."""
    net = ENSEMBLE.backbone.net
    with torch.no_grad(), tap_features(net, ENSEMBLE.taps) as tapped:
        logits = net(STACKED)
    return [tapped[name] for name in ENSEMBLE.taps], logits


FEATURES, LOGITS = _tapped()
STACK_GRAD = torch.randn_like(STACKED)


def _parts(stack, predictors, crossmax):
    def step():
        x = X.detach().requires_grad_(True)
        torch.autograd.grad(stack(x), x, STACK_GRAD)
        features = [f.detach().requires_grad_(True) for f in FEATURES]
        logits = LOGITS.detach().requires_grad_(True)
        loss = F.cross_entropy(crossmax(torch.cat([predictors(features), logits.unsqueeze(0)])), Y)
        torch.autograd.grad(loss, [*features, logits])
        sync()

    return step


PARTS = {
    "robustkernels": _parts(
        lambda x: ENSEMBLE.backbone.stack(x), ENSEMBLE.heads, lambda p: aggregate(p, "crossmax", 3, "kth")
    ),
    "eager_notebook": _parts(
        lambda x: reference.multires_stack(
            x, RESOLUTIONS, generator=torch.Generator(x.device).manual_seed(1)
        ),
        lambda features: torch.stack(
            [h(f.flatten(1)) for h, f in zip(SEPARATE_HEADS, features, strict=True)]
        ),
        lambda p: reference.crossmax(p, 3, "kth"),
    ),
}


@pytest.mark.parametrize("variant", list(PARTS))
def test_self_ensemble_parts(benchmark, variant):
    for p in ENSEMBLE.parameters():
        p.requires_grad_(False)
    step = PARTS[variant]
    step()
    benchmark.group = "self-ensemble step without the backbone"
    benchmark.extra_info.update(
        op="self_ensemble_parts", case=f"resnet18-{BATCH}x3x32x32", passes="forward_backward", variant=variant
    )
    pedantic(benchmark, step, rounds=15, iterations=1, warmup_rounds=1)
