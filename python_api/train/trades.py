"""TRADES (Zhang et al. 2019): clean cross-entropy plus beta times the KL divergence between
the predictions on adversarial and clean inputs, the adversarial input maximising that KL."""

import torch
import torch.nn.functional as F

from robustkernels.functional import pgd_step

from .eval_mode import eval_mode

__all__ = ["TRADES", "trades_adversary"]

# The reference implementation starts the search this close to the clean input.
_START_SCALE = 0.001


def trades_adversary(
    model, x: torch.Tensor, *, eps: float, step: float, steps: int, norm: str = "linf", generator=None
) -> torch.Tensor:
    """The inner maximisation: `steps` projected steps of size `step` on
    KL(softmax(model(x)) || softmax(model(x_adv))) in the `norm` eps-ball around x and [0, 1],
    starting from x plus N(0, 0.001^2) noise drawn from `generator`."""
    with torch.no_grad():
        clean_probabilities = F.softmax(model(x), dim=1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = (x + _START_SCALE * noise).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        divergence = F.kl_div(F.log_softmax(model(x_adv), dim=1), clean_probabilities, reduction="sum")
        (grad,) = torch.autograd.grad(divergence, x_adv)
        x_adv = pgd_step(x_adv.detach(), grad, x, step=step, eps=eps, norm=norm)
    return x_adv.detach()


class TRADES:
    """TRADES with trade-off `beta` (6 in the paper for CIFAR-10). The inner maximisation runs
    with the network in eval mode; the loss is computed in train mode. Reported accuracy is
    on the adversarial batch."""

    name = "trades"

    def __init__(
        self,
        beta: float = 6.0,
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 10,
        norm: str = "linf",
    ):
        self.beta, self.eps, self.step, self.steps, self.norm = (
            float(beta),
            float(eps),
            float(step),
            int(steps),
            norm,
        )

    def settings(self) -> dict:
        return {
            "beta": self.beta,
            "eps": self.eps,
            "step": self.step,
            "steps": self.steps,
            "norm": self.norm,
        }

    def loss(self, model, x, y, *, attack_model, generator):
        with eval_mode(attack_model):
            x_adv = trades_adversary(
                attack_model,
                x,
                eps=self.eps,
                step=self.step,
                steps=self.steps,
                norm=self.norm,
                generator=generator,
            )
        logits_clean = model(x)
        logits_adv = model(x_adv)
        robust = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean"
        )
        return F.cross_entropy(logits_clean, y) + self.beta * robust, logits_adv
