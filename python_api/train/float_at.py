"""FLOAT (Kundu et al., "Fast Learnable Once-for-All Adversarial Training"): one model whose
noisy-weight convolutions and dual batch norm trade clean for robust accuracy at test time.

- `to_float_model(model)`: every nn.Conv2d becomes a MaskedExpertConv2d without masks (path 0
  the clean weight W, path 1 the noisy W + lam * alpha * std(W) * eta with a trainable
  per-layer alpha, init 0.25, named "*.alpha" so the trainer leaves it out of weight decay)
  and every nn.BatchNorm2d a PathBatchNorm2d (path 0 BN_C, path 1 BN_A). The batch norms are
  routed on their own (not following the convolution) so inference can pair noisy weights
  with BN_C, as the lam_th = 0.5 rule needs.
- `FLOATTraining`: Algorithm 1's loss, 0.5 * CE(clean half, lam=0, BN_C) + 0.5 * CE(PGD of the
  other half, lam=1, BN_A), both halves in one routed forward (or one forward each on a CPU).
- `float_inference(model, lam_n, lam_th)`: the test-time setting of a lam_n in [0, 1].
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.nn import MaskedExpertConv2d, PathBatchNorm2d, convert_masked_experts
from robustkernels.nn.restore import restoring

from ..attacks import pgd
from .eval_mode import eval_mode

__all__ = ["CLEAN", "NOISY", "FLOATTraining", "float_inference", "inference_setting", "to_float_model"]

CLEAN, NOISY = 0, 1  # path indices: clean weight + BN_C, noisy weight + BN_A


def to_float_model(model: nn.Module, *, skip: tuple[str, ...] = ()) -> nn.Module:
    """Converts `model` in place to FLOAT's noisy convolutions and dual batch norms (weights kept)."""
    convert_masked_experts(model, density=None, lam=1.0, skip=skip)
    for module in model.modules():
        if isinstance(module, PathBatchNorm2d):
            module.follow(None)
    return model


def inference_setting(lam_n: float, lam_th: float) -> tuple[float, int]:
    """(noise scale, batch-norm path) for a test-time lam_n: BN_A when lam_n > lam_th, else BN_C.
    With lam_th = 0.5 the noise scale is the paper's piecewise rule, 2 * lam_n up to the threshold
    and 2 * (lam_n - 0.5) above it (each BN's segment sweeps the whole noise range); otherwise
    the noise scale is lam_n itself."""
    if not 0.0 <= lam_n <= 1.0:
        raise ValueError(f"lam_n must lie in [0, 1], got {lam_n}")
    if not 0.0 <= lam_th < 1.0:
        raise ValueError(f"lam_th must lie in [0, 1), got {lam_th}")
    bn_path = NOISY if lam_n > lam_th else CLEAN
    if lam_th == 0.5:
        scale = 2.0 * lam_n if bn_path == CLEAN else 2.0 * (lam_n - 0.5)
    else:
        scale = lam_n
    return scale, bn_path


@contextlib.contextmanager
def _routes(model: nn.Module, conv_route, bn_route, lam: float):
    convs = [m for m in model.modules() if isinstance(m, MaskedExpertConv2d)]
    norms = [m for m in model.modules() if isinstance(m, PathBatchNorm2d)]
    with restoring(convs, "route", "lam"), restoring(norms, "route"):
        for conv in convs:
            conv.route, conv.lam = conv_route, lam
        for norm in norms:
            norm.route = bn_route
        yield model


def float_inference(model: nn.Module, lam_n: float, lam_th: float = 0.5):
    """`with float_inference(model, lam_n, lam_th):` runs the block with the noisy path at the
    noise scale and the batch norm `inference_setting` gives (lam_n = 0: the exact clean model)."""
    scale, bn_path = inference_setting(lam_n, lam_th)
    return _routes(model, NOISY, bn_path, scale)


class FLOATTraining:
    """FLOAT's Algorithm 1 on one batch: the first half clean (lam=0, BN_C), the second half
    attacked by PGD (random start) with lam=1 and BN_A, then trained on; loss
    0.5 * L_C + 0.5 * L_A. The attack runs in eval mode, as PGD-AT's. Reported accuracy is on
    the whole (clean + adversarial) batch.

    `forward` says how the two halves are trained: "routed" runs them in one forward routed
    [clean, adversarial] (one launch per layer for both halves, the GPU's choice and the one a
    data-parallel wrapper needs: it allows one forward per backward); "separate" runs one forward
    per half (on a CPU the routed forward's joins of the halves at every layer cost more than
    they save: benchmarks/results/float_training.md); "auto" (default) picks "separate" on a CPU
    outside data parallelism, else "routed"."""

    name = "float"
    FORWARDS = ("auto", "routed", "separate")

    def __init__(
        self,
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 7,
        norm: str = "linf",
        forward: str = "auto",
    ):
        if forward not in self.FORWARDS:
            raise ValueError(f"forward must be one of {self.FORWARDS}, got {forward!r}")
        self.eps, self.step, self.steps, self.norm = float(eps), float(step), int(steps), norm
        self.forward = forward

    def settings(self) -> dict:
        return {"eps": self.eps, "step": self.step, "steps": self.steps, "norm": self.norm}

    def _routed(self, model, attack_model, device: torch.device) -> bool:
        if self.forward == "auto":
            return device.type != "cpu" or model is not attack_model
        return self.forward == "routed"

    def loss(self, model, x, y, *, attack_model, generator):
        half = len(y) // 2
        with eval_mode(attack_model), _routes(attack_model, NOISY, NOISY, 1.0):
            x_adv = pgd(
                attack_model,
                x[half:],
                y[half:],
                eps=self.eps,
                step=self.step,
                steps=self.steps,
                norm=self.norm,
                generator=generator,
            )
        if self._routed(model, attack_model, x.device):
            split = [half, len(y) - half]  # the clean path has no noise whatever lam is
            with _routes(attack_model, split, split, 1.0):
                logits = model(torch.cat([x[:half], x_adv]))
        else:
            with _routes(attack_model, CLEAN, CLEAN, 1.0):
                clean_logits = model(x[:half])
            with _routes(attack_model, NOISY, NOISY, 1.0):
                logits = torch.cat([clean_logits, model(x_adv)])
        loss = 0.5 * F.cross_entropy(logits[:half], y[:half]) + 0.5 * F.cross_entropy(logits[half:], y[half:])
        return loss, logits
