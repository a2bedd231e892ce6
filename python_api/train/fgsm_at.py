"""The notebook's light adversarial training for the multires backbone ("Ensemble everything
everywhere"): FGSM at eps (8/255), no random start, crafted with the network in eval mode,
replacing the clean batch."""

import torch.nn.functional as F

from ..attacks import fgsm
from .eval_mode import eval_mode

__all__ = ["FGSMTraining"]


class FGSMTraining:
    """Cross-entropy on FGSM examples (one sign step of size eps from the clean batch)."""

    name = "fgsm-at"

    def __init__(self, eps: float = 8 / 255):
        self.eps = float(eps)

    def settings(self) -> dict:
        return {"eps": self.eps}

    def loss(self, model, x, y, *, attack_model, generator):
        with eval_mode(attack_model):
            x_adv = fgsm(attack_model, x, y, eps=self.eps)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
