"""FGSM and PGD (Madry et al., 2018) under L∞ and L2, with restarts, momentum
(MI-FGSM, Dong et al., 2018), input diversity, EOT and targeted variants. Every step
is one `robustkernels.functional.pgd_step`."""

from collections.abc import Callable
from functools import partial

import torch

from robustkernels.functional import pgd_step

from .arguments import check_batch, check_count, check_nonnegative, check_norm
from .eot import loss_gradient, predict
from .guard import untouched
from .losses import LOSSES
from .start import uniform_in_ball
from .transfer import input_diversity as _input_diversity


def l1_normalised(grad: torch.Tensor) -> torch.Tensor:
    """grad / ||grad_b||_1 per sample: MI-FGSM's momentum accumulates directions, not magnitudes."""
    norms = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12)
    return grad / norms.reshape((-1,) + (1,) * (grad.dim() - 1))


def succeeded(
    model, x_adv: torch.Tensor, y: torch.Tensor | None, target: torch.Tensor | None
) -> torch.Tensor:
    """Per sample: the model predicts the target (targeted) or anything but y (untargeted)."""
    predicted = predict(model, x_adv)
    return predicted == target if target is not None else predicted != y


def _single_run(model, x, labels, target, *, eps, step, steps, norm, random_start, loss, momentum, eot_draws,
                transform, generator, lo, hi):  # fmt: skip
    x_adv = uniform_in_ball(x, eps, norm, generator, lo, hi) if random_start else x.clone()
    velocity = torch.zeros_like(x)
    for _ in range(steps):
        grad, _, _ = loss_gradient(
            model, x_adv, labels, loss, target=target, draws=eot_draws, transform=transform
        )
        if momentum > 0:
            velocity = momentum * velocity + l1_normalised(grad)
            grad = velocity
        x_adv = pgd_step(x_adv, grad, x, step=step, eps=eps, norm=norm, lo=lo, hi=hi)
    return x_adv


def pgd(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    targeted: bool = False,
    momentum: float = 0.0,
    eot_draws: int = 1,
    input_diversity: float = 0.0,
    generator: torch.Generator | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on `loss` within the eps ball around x (and the [lo, hi] box).

    step: step size (sign step for L∞, unit-L2 gradient step for L2). targeted=True
    reads y as target labels and moves towards them ("ce" or "cw"); the targeted DLR
    loss needs the true labels as well: loss="dlr-targeted" with y true and `target`. momentum > 0 is
    MI-FGSM (L1-normalised gradients accumulated with this decay). input_diversity is
    DI's probability of transforming the input per gradient draw. eot_draws averages
    each gradient over that many forward passes. With restarts > 1, each restart
    attacks the samples no earlier restart fooled; the result holds, per sample, the
    example of the first successful restart, or of the last one. The model's mode and
    parameters' requires_grad are left as they were, and no gradient reaches them.
    """
    check_batch(x, y)
    check_norm(norm)
    check_nonnegative("eps", eps)
    check_nonnegative("step", step)
    check_nonnegative("momentum", momentum)
    check_count("steps", steps)
    check_count("restarts", restarts)
    check_count("eot_draws", eot_draws)
    if loss not in LOSSES or (targeted and loss.startswith("dlr")):
        raise ValueError(
            f"loss must be one of {LOSSES} ('ce' or 'cw' with targeted=True), got {loss!r}"
            f"{' (targeted)' if targeted else ''}"
        )
    if (loss == "dlr-targeted") != (target is not None):
        raise ValueError(
            "target labels go with loss 'dlr-targeted' (y then holds the true labels), and only with it"
        )
    if target is not None:
        check_batch(x, target, name_y="target")
    # (true labels, target labels) as the loss reads them; targeted=True: y are the targets
    labels, goal = (None, y) if targeted else (y, target)
    if not 0 <= input_diversity <= 1:
        raise ValueError(f"input_diversity must be a probability in [0, 1], got {input_diversity}")
    transform = (
        partial(_input_diversity, probability=input_diversity, generator=generator)
        if input_diversity
        else None
    )
    x = x.detach()
    result = x.clone()
    with untouched(model):
        remaining = torch.arange(x.shape[0], device=x.device)
        for restart in range(restarts):
            labels_r = None if labels is None else labels[remaining]
            goal_r = None if goal is None else goal[remaining]
            x_r = _single_run(
                model, x[remaining], labels_r, goal_r, eps=eps, step=step, steps=steps, norm=norm,
                random_start=random_start, loss=loss, momentum=momentum,
                eot_draws=eot_draws, transform=transform, generator=generator, lo=lo, hi=hi,
            )  # fmt: skip
            result[remaining] = x_r
            if restart + 1 == restarts:
                break
            # success: the target when targeted=True, else misclassification (also for
            # "dlr-targeted", whose loss only lifts the target above the true class, as in APGD-T)
            remaining = remaining[~succeeded(model, x_r, labels_r, goal_r if targeted else None)]
            if remaining.numel() == 0:
                break
    return result


def fgsm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    targeted: bool = False,
    eot_draws: int = 1,
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """The fast gradient (sign) method: one step of size eps from x (Goodfellow et al., 2015)."""
    return pgd(
        model, x, y, eps=eps, step=eps, steps=1, norm=norm, random_start=False, loss=loss,
        targeted=targeted, eot_draws=eot_draws, lo=lo, hi=hi,
    )  # fmt: skip
