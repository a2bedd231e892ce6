"""OAT and OATS (Wang et al. 2020, "Once-for-All Adversarial Training"), the baselines both
papers measure FLOAT and SMART against: one model conditioned on the trade-off weight lam.

- `to_oat_model(model)`: every nn.BatchNorm2d becomes a dual batch norm (PathBatchNorm2d: BN_C
  for lam = 0, BN_A for lam > 0) followed by a FiLM2d conditioned on lam; the convolutions stay
  plain. `to_oat_model(model, widths)` is OATS: FLOAT-Slim's slimmable layers
  (convert_slimmable: switchable dual BNs per width) run noise-free, each batch norm followed
  by a FiLM2d.
- `OATTraining`: per batch, lam drawn from OAT_LAMS = {0, 0.1, 0.2, 0.3, 0.4, 1}, the model set
  at lam (FiLM and BN), PGD examples crafted on it, loss (1 - lam) * CE(clean) + lam * CE(adv).
- `OATSTraining`: OAT's loss at every width with one lam per batch, gradients summed
  (FLOAT-Slim's accumulation).
- `oat_inference(model, lam)`: the model at a test-time lam in [0, 1] (BN_A for any lam > 0).
"""

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustkernels.nn import PathBatchNorm2d, convert_slimmable, use_width
from robustkernels.nn.film import EMBEDDING_DIM, FiLM2d, FiLMAfter
from robustkernels.nn.path_convert import _replace
from robustkernels.nn.restore import restoring
from robustkernels.nn.slimmable import SlimmableBatchNorm2d

from ..attacks import pgd
from .eval_mode import eval_mode
from .float_at import CLEAN, NOISY
from .float_slim import FLOATSlimTraining

__all__ = ["OAT_LAMS", "OATSTraining", "OATTraining", "oat_inference", "oats_inference", "to_oat_model"]

OAT_LAMS = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)


def to_oat_model(
    model: nn.Module,
    widths: Sequence[float] | None = None,
    *,
    embedding_dim: int = EMBEDDING_DIM,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Converts `model` in place (weights kept) to OAT (widths None) or OATS (slimmable at
    `widths`); the FiLM codes are drawn from `generator`."""
    if widths is not None:
        convert_slimmable(model, widths, lam=0.0)  # the noisy path is never used: route 0 only

    def build(child):
        if type(child) is nn.BatchNorm2d:
            return FiLMAfter(
                PathBatchNorm2d.from_batchnorm(child, 2),
                FiLM2d(child.num_features, embedding_dim, generator=generator),
            )
        if type(child) is SlimmableBatchNorm2d:
            return FiLMAfter(child, FiLM2d(child.num_features, embedding_dim, generator=generator))
        return None

    _replace(model, build, ())
    if not any(isinstance(m, FiLM2d) for m in model.modules()):
        raise ValueError("OAT conditions the batch norms: the model has no nn.BatchNorm2d")
    return model


@contextlib.contextmanager
def oat_inference(model: nn.Module, lam: float):
    """`with oat_inference(model, lam):` runs the block with every FiLM at lam and every dual batch
    norm on BN_C (lam = 0) or BN_A (lam > 0)."""
    if isinstance(lam, bool) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    films = [m for m in model.modules() if isinstance(m, FiLM2d)]
    norms = [m for m in model.modules() if isinstance(m, PathBatchNorm2d)]
    with restoring(films, "lam"), restoring(norms, "route"):
        for film in films:
            film.lam = float(lam)
        for norm in norms:
            norm.route = NOISY if lam > 0 else CLEAN
        yield model


@contextlib.contextmanager
def oats_inference(model: nn.Module, width: float, lam: float):
    """OATS at `width` and lam."""
    with use_width(model, width), oat_inference(model, lam):
        yield model


class OATTraining:
    """OAT on one batch: lam drawn uniformly from `lams` (the method generator), the model set at
    lam, PGD (random start, eval mode) on the whole batch, loss (1 - lam) * CE(x) + lam * CE(x_adv)
    over one forward of both (no attack at lam = 0). Reported accuracy: the adversarial batch's
    (the clean one's at lam = 0)."""

    name = "oat"

    def __init__(
        self,
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 7,
        norm: str = "linf",
        lams: Sequence[float] = OAT_LAMS,
    ):
        if not lams or any(not 0.0 <= lam <= 1.0 for lam in lams):
            raise ValueError(f"lams must be a non-empty sequence in [0, 1], got {lams!r}")
        self.eps, self.step, self.steps, self.norm = float(eps), float(step), int(steps), norm
        self.lams = tuple(float(lam) for lam in lams)

    def settings(self) -> dict:
        return {
            "eps": self.eps,
            "step": self.step,
            "steps": self.steps,
            "norm": self.norm,
            "lams": list(self.lams),
        }

    def draw_lam(self, generator: torch.Generator) -> float:
        index = torch.randint(len(self.lams), (1,), generator=generator, device=generator.device)
        return self.lams[int(index)]

    def loss_at(self, model, x, y, lam: float, *, attack_model, generator):
        with oat_inference(attack_model, lam):
            if lam == 0.0:
                logits = model(x)
                return F.cross_entropy(logits, y), logits
            with eval_mode(attack_model):
                x_adv = pgd(
                    attack_model, x, y, eps=self.eps, step=self.step, steps=self.steps, norm=self.norm,
                    generator=generator,
                )  # fmt: skip
            clean, adversarial = model(torch.cat([x, x_adv])).split(len(y))
        loss = (1 - lam) * F.cross_entropy(clean, y) + lam * F.cross_entropy(adversarial, y)
        return loss, adversarial

    def loss(self, model, x, y, *, attack_model, generator):
        lam = self.draw_lam(generator)
        return self.loss_at(model, x, y, lam, attack_model=attack_model, generator=generator)


class OATSTraining(FLOATSlimTraining):
    """OATS on one batch: one lam drawn as OAT draws it, OAT's loss at that lam at every width
    (widest first), the gradients of all widths summed before the one optimizer step."""

    name = "oats"

    def __init__(
        self,
        widths: Sequence[float] = (0.5, 1.0),
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 7,
        norm: str = "linf",
        lams: Sequence[float] = OAT_LAMS,
    ):
        super().__init__(widths, eps, step, steps, norm)
        self.oat_loss = OATTraining(eps, step, steps, norm, lams)
        self._lam = None

    def settings(self) -> dict:
        return {"widths": list(self.widths), **self.oat_loss.settings()}

    def _width_loss(self, model, x, y, width, attack_model, generator):
        with use_width(attack_model, width):
            return self.oat_loss.loss_at(
                model, x, y, self._lam, attack_model=attack_model, generator=generator
            )

    def loss(self, model, x, y, *, attack_model, generator):
        self._lam = self.oat_loss.draw_lam(generator)
        return super().loss(model, x, y, attack_model=attack_model, generator=generator)
