"""DeepFool (Moosavi-Dezfooli et al., CVPR 2016), L2, multi-class: at each iteration the
model is linearised around the current point and the sample moves onto the nearest linearised
decision boundary among its `candidates` most likely classes (at the clean input), with the
published overshoot 0.02 on the accumulated perturbation. A robustness evaluation at an L2
budget eps gets the minimal perturbation found, projected onto the eps ball (and the [lo, hi]
box) by `robustkernels.functional.pgd_step`: a sample whose minimal perturbation is longer
than eps keeps a point inside the budget that DeepFool did not need to fool it."""

import torch

from robustkernels.functional import pgd_step

from .arguments import check_batch, check_count, check_nonnegative
from .guard import untouched

__all__ = ["deepfool"]

_SLACK = 1e-4  # DeepFool's step past the linearised boundary, so the label really flips


def _candidate_gradients(model, x: torch.Tensor, classes: torch.Tensor):
    """(logits of the candidate classes [B, n], their input gradients [B, n, ...])."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits = model(x_in).gather(1, classes)
        grads = [
            torch.autograd.grad(logits[:, j].sum(), x_in, retain_graph=j + 1 < classes.shape[1])[0]
            for j in range(classes.shape[1])
        ]
    return logits.detach(), torch.stack(grads, dim=1)


def deepfool(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int = 10,
    lo: float = 0.0,
    hi: float = 1.0,
) -> torch.Tensor:
    """DeepFool-L2 examples of (x, y) within the L2 ball of radius eps. Samples already
    misclassified at x stay at x. The model's mode and requires_grad are left as they were."""
    check_batch(x, y)
    check_nonnegative("eps", eps)
    check_nonnegative("overshoot", overshoot)
    check_count("steps", steps)
    check_count("candidates", candidates, minimum=2)
    x = x.detach()
    with untouched(model), torch.no_grad():
        logits = model(x)
        count = min(candidates, logits.shape[1])
        # the true class first, then the most likely others
        others = logits.scatter(1, y[:, None], float("-inf")).topk(count - 1, dim=1).indices
        classes = torch.cat([y[:, None], others], dim=1)
        total = torch.zeros_like(x)
        active = (logits.argmax(dim=1) == y).nonzero().flatten()
        flat = (-1,) + (1,) * (x.dim() - 1)
        for _ in range(steps):
            if active.numel() == 0:
                break
            current = (x[active] + (1 + overshoot) * total[active]).clamp(lo, hi)
            class_logits, grads = _candidate_gradients(model, current, classes[active])
            still = class_logits.argmax(dim=1) == 0  # the true class is still on top
            active, class_logits, grads = active[still], class_logits[still], grads[still]
            if active.numel() == 0:
                break
            w = grads[:, 1:] - grads[:, :1]  # [b, n - 1, ...]
            f = class_logits[:, 1:] - class_logits[:, :1]  # < 0 while y wins
            w_norm = w.flatten(2).norm(dim=2).clamp_min(1e-12)
            nearest = (f.abs() / w_norm).argmin(dim=1)
            pick = torch.arange(len(active), device=x.device)
            w_l, f_l, n_l = w[pick, nearest], f[pick, nearest], w_norm[pick, nearest]
            total[active] += ((f_l.abs() + _SLACK) / n_l.square()).reshape(flat) * w_l
        return pgd_step(
            x, (1 + overshoot) * total, x, step=1.0, eps=eps, norm="l2", lo=lo, hi=hi, normalize=False
        )
