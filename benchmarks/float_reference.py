"""FLOAT written as the public PNI / FLOAT code writes it, with plain torch layers: the eager
baseline that `benchmarks/test_float_training.py` times FLOATTraining against.

- `PNIConv2d`: an nn.Conv2d whose forward, when lam > 0, uses W + lam * alpha * std(W) * eta with
  eta from torch.randn_like (drawn per call, std(W) outside autograd) and a trainable
  per-layer alpha (init 0.25, named "*.alpha" as in to_float_model, so the trainer's weight
  decay skips it).
- `DualBatchNorm2d`: two nn.BatchNorm2d, BN_C and BN_A; `route` picks one.
- `to_eager_float_model(model)`: the same swap as to_float_model, into these layers.
- `EagerFLOATTraining`: Algorithm 1 as FLOATTraining runs it (the same PGD, eval mode, lam and
  batch norms), except that eager layers cannot route a batch: the clean half and the
  adversarial half take two separate forwards.

It lives with the benchmarks, not in the installed package (only the benchmark and
tests/test_float_training_reference.py use it), nor in robustkernels.reference, which holds
pure-torch oracles of single ops: this is a training method built on the API's attack and trainer.
"""

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.api.attacks import pgd
from robustkernels.api.train.eval_mode import eval_mode
from robustkernels.api.train.float_at import CLEAN, NOISY, FLOATTraining
from robustkernels.nn.noisy import ALPHA_INIT
from robustkernels.nn.restore import restoring
from robustkernels.reference.noisy_weight import pni_noisy_weight

__all__ = ["DualBatchNorm2d", "EagerFLOATTraining", "PNIConv2d", "eager_setting", "to_eager_float_model"]


class PNIConv2d(nn.Conv2d):
    """nn.Conv2d with PNI's noisy weight W + lam * alpha * std(W) * randn_like(W) when lam > 0."""

    def __init__(self, *args, alpha_init: float = ALPHA_INIT, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = nn.Parameter(
            torch.full((1,), alpha_init, device=self.weight.device, dtype=self.weight.dtype)
        )
        self.lam = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = pni_noisy_weight(self.weight, self.alpha, self.lam) if self.lam > 0 else self.weight
        return self._conv_forward(x, weight, self.bias)


class DualBatchNorm2d(nn.Module):
    """FLOAT's dual batch norm as two nn.BatchNorm2d: bns[CLEAN] is BN_C, bns[NOISY] BN_A."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.bns = nn.ModuleList([copy.deepcopy(bn), copy.deepcopy(bn)])
        self.route = CLEAN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[self.route](x)


def to_eager_float_model(model: nn.Module) -> nn.Module:
    """Converts `model` in place: every nn.Conv2d becomes a PNIConv2d and every nn.BatchNorm2d a
    DualBatchNorm2d, weights and statistics kept (the eager counterpart of to_float_model)."""
    converted: dict[int, nn.Module] = {}  # a layer shared by several parents stays shared

    def build(child: nn.Module) -> nn.Module | None:
        if type(child) is nn.BatchNorm2d:
            return DualBatchNorm2d(child)
        if type(child) is not nn.Conv2d:
            return None
        conv = PNIConv2d(
            child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
            child.dilation, child.groups, child.bias is not None, child.padding_mode,
            device=child.weight.device, dtype=child.weight.dtype,
        )  # fmt: skip
        conv.load_state_dict(child.state_dict(), strict=False)  # alpha keeps its init
        return conv.train(child.training)

    for module in list(model.modules()):
        for name, child in list(module._modules.items()):  # named_children() skips repeats
            if child is None:
                continue
            if id(child) not in converted:
                converted[id(child)] = build(child)
            if converted[id(child)] is not None:
                setattr(module, name, converted[id(child)])
    return model


@contextlib.contextmanager
def eager_setting(model: nn.Module, lam: float, bn_path: int):
    """`with eager_setting(model, lam, bn_path):` runs the block with noise scale lam on every
    PNIConv2d and batch norm bn_path on every DualBatchNorm2d, then restores them."""
    convs = [m for m in model.modules() if isinstance(m, PNIConv2d)]
    norms = [m for m in model.modules() if isinstance(m, DualBatchNorm2d)]
    with restoring(convs, "lam"), restoring(norms, "route"):
        for conv in convs:
            conv.lam = lam
        for norm in norms:
            norm.route = bn_path
        yield model


class EagerFLOATTraining(FLOATTraining):
    """FLOATTraining's Algorithm 1 on a to_eager_float_model'd model: PGD (random start, eval
    mode, lam=1, BN_A) on the second half of the batch, then the clean half (lam=0, BN_C) and
    the adversarial half (lam=1, BN_A) in two forwards; loss 0.5 * L_C + 0.5 * L_A."""

    name = "float-eager"

    def loss(self, model, x, y, *, attack_model, generator):
        half = len(y) // 2
        with eval_mode(attack_model), eager_setting(attack_model, 1.0, NOISY):
            x_adv = pgd(attack_model, x[half:], y[half:], **self.settings(), generator=generator)
        with eager_setting(attack_model, 0.0, CLEAN):
            clean = model(x[:half])
        with eager_setting(attack_model, 1.0, NOISY):
            adversarial = model(x_adv)
        loss = 0.5 * F.cross_entropy(clean, y[:half]) + 0.5 * F.cross_entropy(adversarial, y[half:])
        return loss, torch.cat([clean, adversarial])
