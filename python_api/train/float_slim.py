"""FLOAT-Slim (FLOATS, Algorithm 2 of Kundu et al., "FLOAT: Fast Learnable Once-for-All
Adversarial Training"): one FLOAT model trained at several widths at once.

- `to_floats_model(model, widths)`: FLOAT's noisy dual-path convolutions (alpha init 0.25,
  named "*.alpha", so the trainer leaves it out of weight decay) made slimmable, with one
  BN_C / BN_A pair per width (robustkernels.nn.convert_slimmable).
- `FLOATSlimTraining`: for each width in descending order, FLOAT's loss (FLOATTraining: the
  clean half at lam=0 with that width's BN_C, PGD of the other half at that width with lam=1
  and its BN_A), gradients summed over the widths, then the trainer's one optimizer step.
- `floats_inference(model, width, lam_n, lam_th)`: one width at float_inference's setting.
"""

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from robustkernels.nn import PathBatchNorm2d, convert_slimmable, use_width
from robustkernels.nn.slimmable import _check_widths

from .float_at import FLOATTraining, float_inference

__all__ = ["FLOATSlimTraining", "floats_inference", "to_floats_model"]


def to_floats_model(
    model: nn.Module, widths: Sequence[float] = (0.5, 1.0), *, skip: tuple[str, ...] = ()
) -> nn.Module:
    """Converts `model` in place to slimmable FLOAT layers at `widths` (weights kept); it starts
    at its largest width. The batch norms are routed on their own, as in to_float_model."""
    convert_slimmable(model, widths, lam=1.0, skip=skip)
    for module in model.modules():
        if isinstance(module, PathBatchNorm2d):
            module.follow(None)
    return model


@contextlib.contextmanager
def floats_inference(model: nn.Module, width: float, lam_n: float, lam_th: float = 0.5):
    """`with floats_inference(model, width, lam_n, lam_th):` runs the block at `width` with
    float_inference's noise scale and batch norm (that width's BN_C or BN_A) for lam_n."""
    with use_width(model, width), float_inference(model, lam_n, lam_th):
        yield model


class FLOATSlimTraining:
    """Algorithm 2 on one batch: FLOAT's loss (FLOATTraining) at every width, widest first, with
    the gradients of all widths summed before the one optimizer step.

    Gradient accumulation: each width but the last runs forward on the unwrapped
    `attack_model` and its gradients are taken at once with torch.autograd.grad (its graph is
    freed before the next width runs, so memory is that of one width). The returned loss is
    the last width's loss plus, per parameter, p * g - (p * g).detach() with g the summed
    earlier gradients: its value adds nothing, its gradient is exactly g. So the trainer's one
    backward gives every parameter the sum of all widths' gradients, whatever the trainer does
    with .grad before it (it zeroes them), and a data-parallel wrapper reduces that sum once.
    The reported loss is the sum of the widths' losses; the logits are the widest width's."""

    name = "floats"

    def __init__(
        self,
        widths: Sequence[float] = (0.5, 1.0),
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 7,
        norm: str = "linf",
    ):
        self.widths = tuple(reversed(_check_widths(widths)))  # descending, as Algorithm 2 runs them
        self.float_loss = FLOATTraining(eps, step, steps, norm)

    def settings(self) -> dict:
        return {"widths": list(self.widths), **self.float_loss.settings()}

    def _width_loss(self, model, x, y, width, attack_model, generator):
        with use_width(attack_model, width):
            return self.float_loss.loss(model, x, y, attack_model=attack_model, generator=generator)

    def loss(self, model, x, y, *, attack_model, generator):
        params = [p for p in attack_model.parameters() if p.requires_grad]
        earlier = [None] * len(params)
        earlier_loss = torch.zeros((), device=x.device)
        widest_logits = None
        for width in self.widths[:-1]:
            loss, logits = self._width_loss(attack_model, x, y, width, attack_model, generator)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            earlier = [
                g if e is None else e if g is None else e + g for e, g in zip(earlier, grads, strict=True)
            ]
            earlier_loss = earlier_loss + loss.detach()
            widest_logits = logits.detach() if widest_logits is None else widest_logits
        loss, logits = self._width_loss(model, x, y, self.widths[-1], attack_model, generator)
        total = loss + earlier_loss
        carried = [(p * g).sum() for p, g in zip(params, earlier, strict=True) if g is not None]
        if carried:
            surrogate = torch.stack(carried).sum()
            total = total + (surrogate - surrogate.detach())
        return total, (logits.detach() if widest_logits is None else widest_logits)
