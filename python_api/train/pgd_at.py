"""PGD adversarial training (Madry et al. 2018): cross-entropy on PGD examples."""

import torch.nn.functional as F

from ..attacks import pgd
from .eval_mode import eval_mode

__all__ = ["PGDAdversarialTraining"]


class PGDAdversarialTraining:
    """Minimises the cross-entropy of PGD adversarial examples (eps-ball in `norm`, `steps`
    steps of size `alpha`, random start). The attack runs with the network in eval mode,
    so its search steps leave the BatchNorm statistics alone; the training forward on
    the adversarial batch then runs in train mode. Reported accuracy is on that batch."""

    name = "pgd-at"

    def __init__(self, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, norm: str = "linf"):
        self.eps, self.alpha, self.steps, self.norm = float(eps), float(alpha), int(steps), norm

    def settings(self) -> dict:
        return {"eps": self.eps, "alpha": self.alpha, "steps": self.steps, "norm": self.norm}

    def loss(self, model, x, y, *, attack_model, generator):
        with eval_mode(attack_model):
            x_adv = pgd(
                attack_model,
                x,
                y,
                eps=self.eps,
                alpha=self.alpha,
                steps=self.steps,
                norm=self.norm,
                generator=generator,
            )
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
