"""PGD adversarial training (Madry et al. 2018) and its clean/adversarial mix, the "dedicated
models" OAT and FLOAT compare against: one plain model per weight, trained on
(1 - adv_weight) * CE(clean) + adv_weight * CE(PGD examples); adv_weight = 1 (the default) is
Madry's PGD-AT, 0 standard training."""

import torch
import torch.nn.functional as F

from ..attacks import pgd
from .eval_mode import eval_mode

__all__ = ["PGDAdversarialTraining"]


class PGDAdversarialTraining:
    """(1 - adv_weight) * CE(x) + adv_weight * CE(x_adv), x_adv from PGD (eps-ball in `norm`,
    `steps` steps of size `step`, random start). The attack runs with the network in eval mode,
    so its search steps leave the BatchNorm statistics alone; the training forward then runs in
    train mode, on the adversarial batch alone at adv_weight = 1, on the clean and adversarial
    batches in one forward (batch statistics over both) in between; the attack is skipped at
    adv_weight = 0. Reported accuracy is on the adversarial batch (the clean one at 0)."""

    name = "pgd-at"

    def __init__(
        self,
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
        adv_weight: float = 1.0,
    ):
        if isinstance(adv_weight, bool) or not 0.0 <= adv_weight <= 1.0:
            raise ValueError(f"adv_weight must lie in [0, 1], got {adv_weight!r}")
        self.eps, self.step, self.steps, self.norm = float(eps), float(step), int(steps), norm
        self.adv_weight = float(adv_weight)

    def settings(self) -> dict:
        return {
            "eps": self.eps,
            "step": self.step,
            "steps": self.steps,
            "norm": self.norm,
            "adv_weight": self.adv_weight,
        }

    def loss(self, model, x, y, *, attack_model, generator):
        if self.adv_weight == 0.0:
            logits = model(x)
            return F.cross_entropy(logits, y), logits
        with eval_mode(attack_model):
            x_adv = pgd(
                attack_model, x, y, eps=self.eps, step=self.step, steps=self.steps, norm=self.norm,
                generator=generator,
            )  # fmt: skip
        if self.adv_weight == 1.0:
            logits = model(x_adv)
            return F.cross_entropy(logits, y), logits
        logits = model(torch.cat([x, x_adv]))
        clean, adversarial = logits.split(len(y))
        weight = self.adv_weight
        loss = (1 - weight) * F.cross_entropy(clean, y) + weight * F.cross_entropy(adversarial, y)
        return loss, adversarial
