"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020), as published:

- step size 2 eps per sample, halved at checkpoints w_0 = 0, w_1 = 0.22 N,
  w_{j+1} = w_j + max(w_j - w_{j-1} - 0.03 N, 0.06 N), where either at most
  rho = 0.75 of the steps since the last checkpoint raised the loss, or the step was
  not halved at the last checkpoint and the best loss did not improve since; a halved
  sample restarts from its best point ("at most", as AutoAttack's code counts);
- momentum 0.75: x_{k+1} = P(x_k + 0.75 (z_{k+1} - x_k) + 0.25 (x_k - x_{k-1})) with
  z_{k+1} = P(x_k + eta sign(grad)) (L∞) or eta grad / ||grad|| (L2);
- losses "ce", "dlr", and "dlr-targeted" (APGD-T: targets the n_target_classes most
  likely wrong classes one after another);
- restarts, each on the samples no earlier run fooled.
Both projections are `robustkernels.functional.pgd_step` (the second with
normalize=False). Success is misclassification (also for APGD-T, as in AutoAttack), a tie
included (scoring.right); a fooled sample keeps its last misclassified iterate, as AutoAttack
does (on a randomised model the first one sits at the boundary of the EOT-mean logits, where
fresh draws often score it right).
"""

from collections.abc import Callable

import torch

from robustkernels.functional import pgd_step

from .arguments import check_batch, check_count, check_nonnegative, check_norm
from .eot import loss_gradient
from .guard import untouched
from .scoring import right
from .start import on_sphere

APGD_LOSSES = ("ce", "dlr", "dlr-targeted")
MOMENTUM = 0.75
RHO = 0.75


def checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """(first interval 0.22 N, minimal interval 0.06 N, decrease 0.03 N), each at least 1."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def _single_run(model, x, y, target, *, eps, norm, steps, loss, eot_draws, generator, lo, hi, stop):
    batch = x.shape[0]
    x_adv = on_sphere(x, eps, norm, generator, lo, hi)
    grad, loss_now, logits = loss_gradient(model, x_adv, y, loss, target=target, draws=eot_draws)
    fooled = ~right(logits, y) & stop
    x_fooled = x_adv.clone()
    x_best, loss_best, grad_best = x_adv.clone(), loss_now.clone(), grad.clone()
    step = torch.full((batch,), 2.0 * eps, dtype=x.dtype, device=x.device)
    interval, min_interval, decrease = checkpoint_lengths(steps)
    history = [loss_now]
    since_check = 0
    loss_best_at_check = loss_best.clone()
    halved_at_check = torch.ones(batch, dtype=torch.bool, device=x.device)
    x_prev = x_adv
    for i in range(steps):
        z = pgd_step(x_adv, grad, x, step=step, eps=eps, norm=norm, lo=lo, hi=hi)
        if i == 0:
            x_next = z
        else:
            move = MOMENTUM * (z - x_adv) + (1 - MOMENTUM) * (x_adv - x_prev)
            x_next = pgd_step(x_adv, move, x, step=1.0, eps=eps, norm=norm, lo=lo, hi=hi, normalize=False)
        x_prev, x_adv = x_adv, x_next
        grad, loss_now, logits = loss_gradient(model, x_adv, y, loss, target=target, draws=eot_draws)
        wrong = ~right(logits, y) & stop
        x_fooled[wrong] = x_adv[wrong]
        fooled |= wrong
        history.append(loss_now)
        improved = loss_now > loss_best
        x_best[improved], grad_best[improved] = x_adv[improved], grad[improved]
        loss_best = torch.where(improved, loss_now, loss_best)
        since_check += 1
        if since_check == interval:
            window = torch.stack(history[-interval - 1 :])
            raised = (window[1:] > window[:-1]).sum(dim=0)
            halve = (raised <= RHO * interval) | (~halved_at_check & (loss_best_at_check >= loss_best))
            halved_at_check, loss_best_at_check = halve, loss_best.clone()
            step = torch.where(halve, step / 2, step)
            x_adv = torch.where(halve.reshape((-1,) + (1,) * (x.dim() - 1)), x_best, x_adv)
            grad = torch.where(halve.reshape((-1,) + (1,) * (x.dim() - 1)), grad_best, grad)
            interval, since_check = max(interval - decrease, min_interval), 0
    return torch.where(fooled.reshape((-1,) + (1,) * (x.dim() - 1)), x_fooled, x_best), fooled


def _targets(model, x, y, n_target_classes, eot_draws):
    """The n most likely classes other than y per sample, most likely first: [n, B]."""
    with torch.no_grad():
        logits = model(x)
        for _ in range(eot_draws - 1):
            logits = logits + model(x)
    order = logits.scatter(1, y.unsqueeze(1), float("-inf")).argsort(dim=1, descending=True)
    return order[:, : min(n_target_classes, logits.shape[1] - 1)].T


def apgd(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 100,
    loss: str = "ce",
    restarts: int = 1,
    eot_draws: int = 1,
    target: torch.Tensor | None = None,
    n_target_classes: int = 9,
    generator: torch.Generator | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
    stop_when_fooled: bool = True,
) -> torch.Tensor:
    """APGD with loss "ce", "dlr" or "dlr-targeted"; returns, per sample, the last
    misclassified iterate of the first run that fooled the model, else the
    highest-loss point of the last run. "dlr-targeted" attacks `target` (labels [B]) or,
    when None, the n_target_classes most likely wrong classes in turn (APGD-T), each
    with `restarts` runs. eot_draws averages every gradient over that many passes.
    stop_when_fooled=False: no sample counts as fooled, so every run attacks every sample to
    its last step and the result is the highest-loss point of the last run (for a stand-in
    model, e.g. a transfer source, whose misclassification says little about the target's)."""
    check_batch(x, y)
    check_norm(norm)
    check_nonnegative("eps", eps)
    check_count("steps", steps)
    check_count("restarts", restarts)
    check_count("eot_draws", eot_draws)
    check_count("n_target_classes", n_target_classes)
    if loss not in APGD_LOSSES:
        raise ValueError(f"loss must be one of {APGD_LOSSES}, got {loss!r}")
    if target is not None:
        if loss != "dlr-targeted":
            raise ValueError("target labels are used by loss 'dlr-targeted' only")
        check_batch(x, target, name_y="target")
    x = x.detach()
    result = x.clone()
    with untouched(model):
        if loss != "dlr-targeted":
            targets = [None]
        elif target is not None:
            targets = [target]
        else:
            targets = list(_targets(model, x, y, n_target_classes, eot_draws))
        remaining = torch.arange(x.shape[0], device=x.device)
        for target_labels in targets:
            for _ in range(restarts):
                t = None if target_labels is None else target_labels[remaining]
                x_r, fooled = _single_run(
                    model, x[remaining], y[remaining], t, eps=eps, norm=norm, steps=steps, loss=loss,
                    eot_draws=eot_draws, generator=generator, lo=lo, hi=hi, stop=stop_when_fooled,
                )  # fmt: skip
                result[remaining] = x_r
                remaining = remaining[~fooled]
                if remaining.numel() == 0:
                    return result
    return result
