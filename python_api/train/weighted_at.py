"""The PGD-AT baseline at a fixed lam (OAT's and FLOAT's "dedicated models"): one plain model
per lam trained on (1 - lam) * CE(clean) + lam * CE(PGD examples); lam = 1 is Madry's PGD-AT,
lam = 0 standard training."""

import torch
import torch.nn.functional as F

from ..attacks import pgd
from .eval_mode import eval_mode

__all__ = ["WeightedAdversarialTraining"]


class WeightedAdversarialTraining:
    """(1 - lam) * CE(x) + lam * CE(x_adv) with x_adv from PGD (random start, eval mode). The
    attack is skipped at lam = 0. Reported accuracy is on the adversarial batch (clean at lam = 0)."""

    name = "pgd-at-lam"

    def __init__(
        self, lam: float, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 7, norm: str = "linf"
    ):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        self.lam, self.eps, self.alpha, self.steps, self.norm = (
            float(lam),
            float(eps),
            float(alpha),
            int(steps),
            norm,
        )

    def settings(self) -> dict:
        return {"lam": self.lam, "eps": self.eps, "alpha": self.alpha, "steps": self.steps, "norm": self.norm}

    def loss(self, model, x, y, *, attack_model, generator):
        if self.lam == 0.0:
            logits = model(x)
            return F.cross_entropy(logits, y), logits
        with eval_mode(attack_model):
            x_adv = pgd(
                attack_model, x, y, eps=self.eps, alpha=self.alpha, steps=self.steps, norm=self.norm,
                generator=generator,
            )  # fmt: skip
        if self.lam == 1.0:
            logits = model(x_adv)
            return F.cross_entropy(logits, y), logits
        logits = model(torch.cat([x, x_adv]))
        clean, adversarial = logits.split(len(y))
        loss = (1 - self.lam) * F.cross_entropy(clean, y) + self.lam * F.cross_entropy(adversarial, y)
        return loss, adversarial
